"""LangChain front end for DeAL: ``DeALLLM`` (text LLM) and ``ChatDeAL`` (chat model).

Both run the process-wide shared engine (``deal_core.get_engine``), so a model is loaded once even
when the LlamaIndex front end uses it too. Rewards may be ``deal_core`` rewards, plain or async
callables, rubric strings, or LangChain Runnables (see :class:`RunnableReward`).
"""

from .chat import ChatDeAL, to_chat_messages
from .llm import DeALLLM
from .rewards import RunnableReward, adapt_rewards

__all__ = ["ChatDeAL", "DeALLLM", "RunnableReward", "adapt_rewards", "to_chat_messages"]
