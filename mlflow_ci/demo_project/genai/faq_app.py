"""Demo GenAI app: answers customer questions from a small FAQ through a prompt template.

No model and no network: the "retrieval" picks the FAQ entry whose keywords the question mentions, the
template turns it into the reply. Pull requests change the template, as they would change a prompt.
"""

import json
import pathlib

FAQ = json.loads((pathlib.Path(__file__).parent / "faq.json").read_text(encoding="utf-8"))
TEMPLATE = "{answer}"


def retrieve(question: str) -> str:
    text = question.lower()
    scores = {topic: sum(word in text for word in entry["keywords"]) for topic, entry in FAQ.items()}
    return max(scores, key=scores.get)


def answer(question: str) -> str:
    return TEMPLATE.format(answer=FAQ[retrieve(question)]["answer"], question=question)
