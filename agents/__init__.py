"""The agents, one file each, all with the interface of :class:`agents.base.Agent`."""

from agents.base import Agent
from agents.bc import BC
from agents.cpql import CPQL
from agents.cql import CQL
from agents.dql import DQL
from agents.dtql import DTQL
from agents.iql import IQL
from agents.ofql import OFQL

AGENTS: dict[str, type[Agent]] = {cls.name: cls for cls in (IQL, BC, OFQL, DQL, CPQL, DTQL, CQL)}
