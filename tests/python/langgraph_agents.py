"""A two-agent LangGraph graph (a researcher, then a writer), whose chat
models are fakes that report token usage, traced by OpenInference's
LangChain instrumentation and exported over OTLP/HTTP.

usage: langgraph_agents.py OTLP_ENDPOINT

The researcher calls gpt-4o-mini once (1000 input tokens, 200 output);
the writer calls gpt-4o twice (500 input, 100 output each).
"""

import sys
from typing import Any, List, Optional, TypedDict

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from openinference.instrumentation.langchain import LangChainInstrumentor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor


class FakeChat(BaseChatModel):
    """Answers at once and reports the usage it was built with."""

    model_name: str
    input_tokens: int
    output_tokens: int

    @property
    def _llm_type(self) -> str:
        return "openai-chat"

    @property
    def _identifying_params(self) -> dict:
        return {"model_name": self.model_name}

    def _generate(
        self,
        messages: List[BaseMessage],
        stop: Optional[List[str]] = None,
        run_manager: Optional[CallbackManagerForLLMRun] = None,
        **kwargs: Any,
    ) -> ChatResult:
        usage = {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
        }
        message = AIMessage(
            content="done",
            usage_metadata=usage,
            response_metadata={"model_name": self.model_name},
        )
        token_usage = {
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
        }
        return ChatResult(
            generations=[ChatGeneration(message=message)],
            llm_output={"token_usage": token_usage, "model_name": self.model_name},
        )


class State(TypedDict):
    messages: list


def main():
    otlp = sys.argv[1]
    provider = TracerProvider(resource=Resource.create({"service.name": "langgraph-agents"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{otlp}/v1/traces")))
    LangChainInstrumentor().instrument(tracer_provider=provider)

    from langgraph.graph import END, START, StateGraph

    researcher_model = FakeChat(model_name="gpt-4o-mini", input_tokens=1000, output_tokens=200)
    writer_model = FakeChat(model_name="gpt-4o", input_tokens=500, output_tokens=100)

    def researcher(state: State) -> State:
        reply = researcher_model.invoke(state["messages"])
        return {"messages": state["messages"] + [reply]}

    def writer(state: State) -> State:
        draft = writer_model.invoke(state["messages"])
        final = writer_model.invoke(state["messages"] + [draft])
        return {"messages": state["messages"] + [draft, final]}

    graph = StateGraph(State)
    graph.add_node("researcher", researcher)
    graph.add_node("writer", writer)
    graph.add_edge(START, "researcher")
    graph.add_edge("researcher", "writer")
    graph.add_edge("writer", END)
    app = graph.compile(name="report_workflow")
    app.invoke({"messages": [HumanMessage(content="Write a report")]})
    provider.force_flush()
    provider.shutdown()


if __name__ == "__main__":
    main()
