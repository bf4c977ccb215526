DROP TABLE IF EXISTS scheduler_secret;
DROP TABLE IF EXISTS scheduler_state;
DROP TABLE IF EXISTS computed_weights;
DROP TABLE IF EXISTS miner_scores;
DROP TABLE IF EXISTS task_pool;
DROP TABLE IF EXISTS miners;
DROP TABLE IF EXISTS evaluation_cycles;
