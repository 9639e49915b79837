-- The SQLite flavour of postgres_0001_monitoring_tables.sql: the same
-- tables, columns and indexes, in SQLite's types. Timestamps are UTC text
-- with six fraction digits ("2026-11-21T18:00:00.123456Z"), which sorts
-- as it reads; JSON is text; ids are rowids.

CREATE TABLE workflow_traces (
    id INTEGER PRIMARY KEY,
    trace_id TEXT UNIQUE NOT NULL,
    call_id TEXT NOT NULL,
    workflow_name TEXT NOT NULL,
    start_time TEXT NOT NULL,
    end_time TEXT,
    status TEXT NOT NULL,
    total_cost REAL,
    created_at TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- Added: NULL until the root span arrives.
    root_span_id TEXT,
    service_name TEXT,
    span_count INTEGER NOT NULL DEFAULT 0,
    error_count INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE agent_executions (
    id INTEGER PRIMARY KEY,
    trace_id TEXT,
    agent_type TEXT NOT NULL,
    start_time TEXT NOT NULL,
    end_time TEXT,
    execution_time_ms INTEGER,
    success INTEGER NOT NULL,
    input_data TEXT,
    output_data TEXT,
    cost REAL,
    created_at TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- Added.
    span_id TEXT NOT NULL,
    parent_span_id TEXT,
    span_name TEXT NOT NULL,
    kind TEXT NOT NULL,
    provider TEXT,
    model TEXT,
    input_tokens INTEGER,
    output_tokens INTEGER,
    error_message TEXT
);

CREATE TABLE performance_metrics (
    id INTEGER PRIMARY KEY,
    trace_id TEXT,
    metric_type TEXT NOT NULL,
    metric_value REAL NOT NULL,
    timestamp TEXT NOT NULL,
    metadata TEXT,
    -- Added.
    span_id TEXT
);

CREATE TABLE cost_details (
    id INTEGER PRIMARY KEY,
    trace_id TEXT,
    cost_type TEXT NOT NULL, -- 'llm', 'tts', 'api'
    cost_amount REAL NOT NULL,
    usage_units INTEGER,
    unit_cost REAL,
    timestamp TEXT NOT NULL,
    -- Added: what usage_units counts (tokens, characters, calls), and who spent it.
    usage_unit TEXT,
    span_id TEXT,
    agent_type TEXT,
    model TEXT
);

CREATE TABLE alert_history (
    id INTEGER PRIMARY KEY,
    alert_type TEXT NOT NULL,
    severity TEXT NOT NULL,
    message TEXT NOT NULL,
    triggered_at TEXT NOT NULL,
    resolved_at TEXT,
    metadata TEXT
);

-- Added: every span with its attributes, for drill-down. The key is what
-- makes a replay of the same spans a no-op.
CREATE TABLE spans (
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_span_id TEXT,
    name TEXT NOT NULL,
    kind TEXT,
    service_name TEXT,
    start_time TEXT NOT NULL,
    end_time TEXT NOT NULL,
    duration_ms REAL NOT NULL,
    status_code TEXT NOT NULL,
    status_message TEXT,
    cost REAL,
    attributes TEXT NOT NULL,
    events TEXT,
    PRIMARY KEY (trace_id, span_id)
) WITHOUT ROWID;

-- The design documents' indexes.
CREATE INDEX idx_workflow_traces_call_id ON workflow_traces(call_id);
CREATE INDEX idx_workflow_traces_start_time ON workflow_traces(start_time);
CREATE INDEX idx_agent_executions_trace_id ON agent_executions(trace_id);
CREATE INDEX idx_agent_executions_agent_type ON agent_executions(agent_type);
CREATE INDEX idx_performance_metrics_timestamp ON performance_metrics(timestamp);
CREATE INDEX idx_cost_details_timestamp ON cost_details(timestamp);
CREATE INDEX idx_alert_history_triggered_at ON alert_history(triggered_at);
