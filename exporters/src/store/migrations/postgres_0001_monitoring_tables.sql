-- The monitoring tables of the design documents ("Database Schema
-- Extensions"), with the columns a collector needs added after the
-- designed ones. Deliberate changes:
--   * costs are NUMERIC(20,10) and unit costs NUMERIC(20,12), not
--     DECIMAL(10,4) and DECIMAL(10,6): one LLM call often costs less than
--     $0.0001 and one token less than $0.000001, which would round to 0;
--   * no REFERENCES workflow_traces(trace_id): the exporter writes a
--     trace's row in the same transaction as its details, and the
--     per-row foreign-key checks cost about a quarter of the write
--     throughput. Retention deletes a trace's spans and agent executions
--     by trace id, which their primary key and index lead with;
--   * ids are compared byte-wise (COLLATE "C"): they are hex, and the
--     database's locale would only make every index comparison slower.

CREATE TABLE workflow_traces (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    trace_id VARCHAR(255) COLLATE "C" UNIQUE NOT NULL,
    call_id VARCHAR(255) COLLATE "C" NOT NULL,
    workflow_name VARCHAR(100) NOT NULL,
    start_time TIMESTAMP WITH TIME ZONE NOT NULL,
    end_time TIMESTAMP WITH TIME ZONE,
    status VARCHAR(50) NOT NULL,
    total_cost NUMERIC(20,10),
    created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    -- Added: NULL until the root span arrives.
    root_span_id VARCHAR(16) COLLATE "C",
    service_name VARCHAR(255),
    span_count INTEGER NOT NULL DEFAULT 0,
    error_count INTEGER NOT NULL DEFAULT 0,
    input_tokens BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT NOW()
);

CREATE TABLE agent_executions (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    trace_id VARCHAR(255) COLLATE "C",
    agent_type VARCHAR(50) NOT NULL,
    start_time TIMESTAMP WITH TIME ZONE NOT NULL,
    end_time TIMESTAMP WITH TIME ZONE,
    execution_time_ms INTEGER,
    success BOOLEAN NOT NULL,
    input_data JSONB,
    output_data JSONB,
    cost NUMERIC(20,10),
    created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    -- Added.
    span_id VARCHAR(16) COLLATE "C" NOT NULL,
    parent_span_id VARCHAR(16) COLLATE "C",
    span_name TEXT NOT NULL,
    kind VARCHAR(20) NOT NULL,
    provider VARCHAR(100),
    model VARCHAR(255),
    input_tokens BIGINT,
    output_tokens BIGINT,
    error_message TEXT
);

CREATE TABLE performance_metrics (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    trace_id VARCHAR(255) COLLATE "C",
    metric_type VARCHAR(50) NOT NULL,
    metric_value DECIMAL(15,6) NOT NULL,
    timestamp TIMESTAMP WITH TIME ZONE NOT NULL,
    metadata JSONB,
    -- Added.
    span_id VARCHAR(16) COLLATE "C"
);

CREATE TABLE cost_details (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    trace_id VARCHAR(255) COLLATE "C",
    cost_type VARCHAR(50) NOT NULL, -- 'llm', 'tts', 'api'
    cost_amount NUMERIC(20,10) NOT NULL,
    usage_units INTEGER,
    unit_cost NUMERIC(20,12),
    timestamp TIMESTAMP WITH TIME ZONE NOT NULL,
    -- Added: what usage_units counts (tokens, characters, calls), and who spent it.
    usage_unit VARCHAR(20),
    span_id VARCHAR(16) COLLATE "C",
    agent_type VARCHAR(50),
    model VARCHAR(255)
);

CREATE TABLE alert_history (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    alert_type VARCHAR(50) NOT NULL,
    severity VARCHAR(20) NOT NULL,
    message TEXT NOT NULL,
    triggered_at TIMESTAMP WITH TIME ZONE NOT NULL,
    resolved_at TIMESTAMP WITH TIME ZONE,
    metadata JSONB
);

-- Added: every span with its attributes, for drill-down. The key is what
-- makes a replay of the same spans a no-op.
CREATE TABLE spans (
    trace_id VARCHAR(32) COLLATE "C" NOT NULL,
    span_id VARCHAR(16) COLLATE "C" NOT NULL,
    parent_span_id VARCHAR(16) COLLATE "C",
    name TEXT NOT NULL,
    kind VARCHAR(20),
    service_name VARCHAR(255),
    start_time TIMESTAMP WITH TIME ZONE NOT NULL,
    end_time TIMESTAMP WITH TIME ZONE NOT NULL,
    duration_ms DOUBLE PRECISION NOT NULL,
    status_code VARCHAR(10) NOT NULL,
    status_message TEXT,
    cost NUMERIC(20,10),
    attributes JSONB NOT NULL,
    events JSONB,
    PRIMARY KEY (trace_id, span_id)
);

-- The design documents' indexes.
CREATE INDEX idx_workflow_traces_call_id ON workflow_traces(call_id);
CREATE INDEX idx_workflow_traces_start_time ON workflow_traces(start_time);
CREATE INDEX idx_agent_executions_trace_id ON agent_executions(trace_id);
CREATE INDEX idx_agent_executions_agent_type ON agent_executions(agent_type);
CREATE INDEX idx_performance_metrics_timestamp ON performance_metrics(timestamp);
CREATE INDEX idx_cost_details_timestamp ON cost_details(timestamp);
CREATE INDEX idx_alert_history_triggered_at ON alert_history(triggered_at);
