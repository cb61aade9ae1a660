-- Core schema of the arr-pipeline rubric store (DuckDB).
-- Forward-only migrations: each file sql/migrations/NNN_name.sql runs once, in order, inside one
-- transaction together with its row in schema_version.

CREATE TABLE IF NOT EXISTS datasets (
    dataset_id   VARCHAR PRIMARY KEY,   -- content digest of canonical records + image bytes
    name         VARCHAR NOT NULL,
    task         VARCHAR NOT NULL,      -- t2i | edit | pointwise
    n_records    INTEGER NOT NULL,
    source_uri   VARCHAR,
    created_at   TIMESTAMP NOT NULL,
    meta         JSON
);

CREATE TABLE IF NOT EXISTS pairs (
    dataset_id   VARCHAR NOT NULL,
    pair_id      VARCHAR NOT NULL,      -- content digest of one record (images by content hash)
    idx          INTEGER NOT NULL,      -- position in the source file
    split        VARCHAR NOT NULL,      -- seed | validation | test
    record       JSON NOT NULL,         -- canonical record (absolute image URIs + content hashes)
    PRIMARY KEY (dataset_id, pair_id)
);

CREATE TABLE IF NOT EXISTS rubric_sets (
    rubric_set_id  VARCHAR PRIMARY KEY, -- digest of content + lineage
    task           VARCHAR NOT NULL,
    parent_id      VARCHAR,
    dataset_digest VARCHAR,
    n_themes       INTEGER NOT NULL,
    n_criteria     INTEGER NOT NULL,
    created_at     TIMESTAMP NOT NULL,
    metadata       JSON NOT NULL,       -- models, prompt version, parameters, statistics
    body           JSON NOT NULL        -- the full rubric set (themes, tips, criteria)
);

CREATE TABLE IF NOT EXISTS rubrics (
    rubric_set_id VARCHAR NOT NULL,
    kind          VARCHAR NOT NULL,     -- theme_tip | criterion
    theme_idx     INTEGER,
    theme         VARCHAR,
    item_idx      INTEGER NOT NULL,
    text          VARCHAR NOT NULL
);

-- One row per (induction run, pair, epoch) attempt: candidate criteria, judge ranks per order.
CREATE TABLE IF NOT EXISTS induction_records (
    induction_key VARCHAR NOT NULL,     -- digest of (pair_id, generator, verifier, prompt version, params)
    pair_id       VARCHAR NOT NULL,
    dataset_id    VARCHAR,
    epoch         INTEGER NOT NULL,
    criteria      JSON NOT NULL,
    judge         JSON NOT NULL,        -- per order: ranks, reason, abstained
    passed        BOOLEAN NOT NULL,
    final_status  VARCHAR,              -- passed | discarded | NULL while in progress
    created_at    TIMESTAMP NOT NULL,
    PRIMARY KEY (induction_key, epoch)
);

-- VLM response cache. The key covers backend, model, messages (images by content hash), decoding
-- parameters and prompt version; never an API key.
CREATE TABLE IF NOT EXISTS vlm_cache (
    cache_key      VARCHAR PRIMARY KEY,
    backend        VARCHAR NOT NULL,
    model          VARCHAR NOT NULL,
    kind           VARCHAR,
    prompt_version VARCHAR,
    response_text  VARCHAR NOT NULL,
    usage          JSON,
    created_at     TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS judgments (
    judgment_id   VARCHAR PRIMARY KEY,
    rubric_set_id VARCHAR,              -- NULL: judged without rubrics
    pair_id       VARCHAR NOT NULL,
    order_mode    VARCHAR NOT NULL,     -- single | swap | random
    orders        JSON NOT NULL,        -- per presented order: permutation, ranks, reason
    final_rank    JSON,                 -- NULL when abstained
    outcome       VARCHAR NOT NULL,     -- win | tie | abstain
    rewards       JSON,
    judge_model   VARCHAR,
    created_at    TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS training_runs (
    run_id        VARCHAR PRIMARY KEY,
    rubric_set_id VARCHAR,
    policy_id     VARCHAR,
    config        JSON NOT NULL,
    status        VARCHAR NOT NULL,
    lora_uri      VARCHAR,
    metrics       JSON,
    created_at    TIMESTAMP NOT NULL,
    finished_at   TIMESTAMP
);

CREATE TABLE IF NOT EXISTS eval_results (
    eval_id       VARCHAR PRIMARY KEY,
    kind          VARCHAR NOT NULL,     -- preference | geneval | checkpoints | winrate | edit
    rubric_set_id VARCHAR,
    policy_id     VARCHAR,
    config        JSON,
    metrics       JSON NOT NULL,
    report_uri    VARCHAR,
    created_at    TIMESTAMP NOT NULL
);

-- Which MLflow run recorded which stage of which entity (rubric set, training run, evaluation).
CREATE TABLE IF NOT EXISTS mlflow_runs (
    entity_kind    VARCHAR NOT NULL,
    entity_id      VARCHAR NOT NULL,
    stage          VARCHAR NOT NULL,
    mlflow_run_id  VARCHAR NOT NULL,
    parent_run_id  VARCHAR,
    experiment     VARCHAR,
    created_at     TIMESTAMP NOT NULL,
    PRIMARY KEY (entity_kind, entity_id, stage, mlflow_run_id)
);
