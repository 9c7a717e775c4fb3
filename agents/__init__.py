"""The agents, one file each, all with the interface of :class:`agents.base.Agent`."""

from agents.base import Agent
from agents.bc import BC
from agents.iql import IQL

AGENTS: dict[str, type[Agent]] = {cls.name: cls for cls in (IQL, BC)}
