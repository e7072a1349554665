"""The agent of recipes/agent-grpo.yaml: a plain program against the official ``openai`` client, which trains
unchanged (docs/episodes.md, "Any agent program"). It asks the sum, then asks the model to check its answer with
its first reply in the conversation, and returns 1.0 when the final reply starts with the right sum."""


def solve(row, client):
    messages = [{"role": "user", "content": f"What is {row['prompt']}"}]
    first = client.chat.completions.create(model="policy", messages=messages, max_tokens=4)
    messages += [{"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": "Check it. The answer:"}]
    final = client.chat.completions.create(model="policy", messages=messages, max_tokens=4)
    return 1.0 if final.choices[0].message.content.strip().startswith(row["answer"]) else 0.0
