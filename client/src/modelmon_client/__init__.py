"""modelmon-client: send a model server's predictions and labels to modelmon without
slowing the server down, and register models from training code."""

from modelmon_client._http import ModelmonError
from modelmon_client._sender import Refused, Stats
from modelmon_client._version import __version__
from modelmon_client.aio import AsyncMonitor
from modelmon_client.monitor import Monitor
from modelmon_client.summarizing import SummarizingMonitor

__all__ = ["AsyncMonitor", "ModelmonError", "Monitor", "Refused", "Stats",
           "SummarizingMonitor", "__version__"]
