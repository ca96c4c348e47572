"""A sentiment classifier with chat roles and `select`.

    guidance-tui run examples/classifier.py

Look for: the role nodes (their opener/closer text comes from the model's chat
format), and in the token detail of the label, how much probability each
option had and which alternatives the grammar masked.
"""

from engines import assistant, gen, guidance, models, select, system, user

REVIEWS = [
    "The battery lasts two days and the screen is gorgeous.",
    "It broke after a week and support never answered.",
    "It's a phone. It makes calls.",
]


@guidance
def classify(lm, review):
    with user():
        lm += f"Classify the sentiment of this review as positive, negative or neutral.\nReview: {review}"
    with assistant():
        lm += "Sentiment: " + select(["positive", "negative", "neutral"], name="label")
        lm += "\nReason: " + gen("reason", stop="\n", max_tokens=20)
    return lm


base = models.default()
with system():
    base += "You are a careful annotator."

for review in REVIEWS:
    lm = base + classify(review)  # the same base each time: one branch per review
    print(f"{lm['label']:>8}  {review}")
