DELETE FROM miners WHERE status = 'excluded';
ALTER TABLE miners DROP CONSTRAINT miners_status_check;
ALTER TABLE miners ADD CONSTRAINT miners_status_check
    CHECK (status IN ('active', 'inactive', 'invalid_commitment'));
ALTER TABLE task_pool DROP COLUMN verify;
DROP TABLE IF EXISTS verifications;
