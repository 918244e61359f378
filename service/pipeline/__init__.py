"""The answer pipeline in stages, each testable alone: prepare → route → retrieve → decide → respond.

``service.answerer.Answerer`` wires them. Only a message no rule decides (or a rule whose handoff
shows candidates) is encoded and searched.
"""

from service.pipeline.decide import Decider, Decision, Thresholds
from service.pipeline.prepare import Prepared, Preparer
from service.pipeline.respond import Responder
from service.pipeline.retrieve import Candidate, Retrieval, Retriever, Searched
from service.pipeline.route import Router, Rule

__all__ = [
    "Candidate",
    "Decider",
    "Decision",
    "Prepared",
    "Preparer",
    "Responder",
    "Retrieval",
    "Retriever",
    "Router",
    "Rule",
    "Searched",
    "Thresholds",
]
