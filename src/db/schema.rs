//! diesel table definitions of docs/database.md §2 (kept in step with migrations/ by the schema
//! test).

diesel::table! {
    evaluation_cycles (id) {
        id -> Int4,
        block_number -> Int8,
        started_at -> Timestamptz,
        completed_at -> Nullable<Timestamptz>,
        #[max_length = 20]
        status -> Varchar,
        n_miners -> Nullable<Int4>,
        n_environments -> Nullable<Int4>,
        duration_seconds -> Nullable<Float8>,
        error_message -> Nullable<Text>,
        env_ids -> Jsonb,
        episodes_per_env -> Int4,
        pareto_frontier -> Nullable<Jsonb>,
        #[max_length = 16]
        registry_source -> Varchar,
    }
}

diesel::table! {
    miners (id) {
        id -> Int4,
        cycle_id -> Int4,
        uid -> Int4,
        #[max_length = 64]
        hotkey -> Varchar,
        commitment -> Nullable<Text>,
        #[max_length = 256]
        repo -> Nullable<Varchar>,
        #[max_length = 64]
        revision -> Nullable<Varchar>,
        endpoint -> Nullable<Text>,
        encrypted -> Bool,
        commit_block -> Nullable<Int8>,
        #[max_length = 32]
        status -> Varchar,
        status_reason -> Nullable<Text>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    task_pool (id) {
        id -> Int8,
        #[max_length = 36]
        task_uuid -> Varchar,
        cycle_id -> Int4,
        miner_uid -> Int4,
        #[max_length = 64]
        miner_hotkey -> Varchar,
        miner_endpoint -> Text,
        #[max_length = 256]
        miner_repo -> Nullable<Varchar>,
        #[max_length = 64]
        miner_revision -> Nullable<Varchar>,
        #[max_length = 64]
        env_id -> Varchar,
        seed -> Int4,
        sim_seed -> Int8,
        #[max_length = 20]
        status -> Varchar,
        attempts -> Int4,
        max_attempts -> Int4,
        #[max_length = 64]
        assigned_to -> Nullable<Varchar>,
        assigned_at -> Nullable<Timestamptz>,
        completed_at -> Nullable<Timestamptz>,
        result -> Nullable<Jsonb>,
        #[max_length = 64]
        last_submitted_by -> Nullable<Varchar>,
        last_submitted_attempt -> Nullable<Int4>,
        created_at -> Timestamptz,
        verify -> Bool,
    }
}

diesel::table! {
    verifications (id) {
        id -> Int8,
        uid -> Int4,
        #[max_length = 64]
        hotkey -> Varchar,
        #[max_length = 256]
        repo -> Varchar,
        #[max_length = 64]
        revision -> Varchar,
        endpoint -> Text,
        #[max_length = 16]
        outcome -> Varchar,
        match_score -> Nullable<Float8>,
        samples -> Jsonb,
        error -> Nullable<Text>,
        #[max_length = 64]
        executor_id -> Varchar,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    miner_scores (id) {
        id -> Int4,
        cycle_id -> Int4,
        uid -> Int4,
        #[max_length = 64]
        hotkey -> Varchar,
        #[max_length = 64]
        env_id -> Varchar,
        success_rate -> Float8,
        mean_reward -> Float8,
        episodes_completed -> Int4,
        episodes_failed -> Int4,
        episodes_excluded -> Int4,
    }
}

diesel::table! {
    computed_weights (id) {
        id -> Int4,
        cycle_id -> Int4,
        block_number -> Int8,
        weights_json -> Jsonb,
        weights_u16_json -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    scheduler_state (id) {
        id -> Int2,
        current_block -> Nullable<Int8>,
        chain_ok -> Bool,
        chain_error -> Nullable<Text>,
        #[max_length = 16]
        registry_source -> Varchar,
        env_ids -> Jsonb,
        eval_interval_seconds -> Int4,
        heartbeat_interval_seconds -> Int4,
        next_cycle_at -> Nullable<Timestamptz>,
        heartbeat_at -> Timestamptz,
    }
}

diesel::table! {
    scheduler_secret (id) {
        id -> Int2,
        seed_secret -> Bytea,
        created_at -> Timestamptz,
    }
}

diesel::joinable!(miners -> evaluation_cycles (cycle_id));
diesel::joinable!(task_pool -> evaluation_cycles (cycle_id));
diesel::joinable!(miner_scores -> evaluation_cycles (cycle_id));
diesel::joinable!(computed_weights -> evaluation_cycles (cycle_id));

diesel::allow_tables_to_appear_in_same_query!(
    evaluation_cycles,
    miners,
    task_pool,
    miner_scores,
    computed_weights,
    scheduler_state,
    scheduler_secret,
    verifications,
);
