"""Chat evaluations: accuracy of a chat model on tasks, and ChatCORE, their centred mean.

- categorical tasks (ARC, MMLU): one forward pass over the prompt; the model's choice is the answer
  letter with the highest logit at the `<|assistant_start|>` position (only the letters compete);
- generative tasks (GSM8K, HumanEval, ...): sample completions with the engine (calculator live) and
  let the task judge them; a problem passes if any of its samples does.

ChatCORE = mean over tasks of (accuracy - random baseline) / (1 - random baseline), where the random
baseline is 1/number-of-choices for categorical tasks and 0 for generative ones.
"""
import torch

from nanochat import faults
from nanochat.errors import NanochatError

STANDARD = ("arc-easy", "arc-challenge", "mmlu", "gsm8k", "humaneval", "spellingbee")  # the published ChatCORE set


def letter_ids(tok, letters) -> list[int]:
    ids = []
    for letter in letters:
        encoded = tok.encode(letter)
        if len(encoded) != 1:
            raise NanochatError(f"answer letter {letter!r} is {len(encoded)} tokens for this tokenizer; categorical "
                                f"evaluation needs single-token letters")
        ids.append(encoded[0])
    return ids


@torch.no_grad()
def evaluate_categorical(model, tok, view, *, batch_size: int, device, world, max_problems: int = -1,
                         progress=None) -> dict:
    """Accuracy and random baseline of a categorical task view, examples strided over processes."""
    n = len(view) if max_problems < 0 else min(len(view), max_problems)
    mine = list(range(world.rank, n, world.size))
    correct = baseline = 0.0
    for start in range(0, len(mine), batch_size):
        faults.hit("step")  # NANOCHAT_FAULT: mid-task
        convs = [view[i] for i in mine[start:start + batch_size]]
        prompts = [tok.render_for_completion(c) for c in convs]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), tok.bos_id, dtype=torch.long)
        for row, p in enumerate(prompts):
            ids[row, :len(p)] = torch.tensor(p)
        logits = model(ids.to(device))
        for row, (conv, p) in enumerate(zip(convs, prompts)):
            letters = conv["letters"]
            scores = logits[row, len(p) - 1, letter_ids(tok, letters)]
            choice = letters[int(scores.argmax())]
            correct += float(view.task.evaluate(conv, choice))
            baseline += 1.0 / len(letters)
        done = min(start + batch_size, len(mine))
        if progress and (done // batch_size) % 10 == 0:
            progress(f"{view.task.name}: {done}/{len(mine)} on this process, {correct / done:.3f} so far")
    correct, baseline, total = world.all_reduce_sum([correct, baseline, float(len(mine))])
    return {"accuracy": correct / max(total, 1), "baseline": baseline / max(total, 1), "problems": int(total)}


@torch.no_grad()
def evaluate_generative(engine, tok, view, *, num_samples: int, max_new_tokens: int, temperature: float, top_k: int,
                        world, max_problems: int = -1, progress=None) -> dict:
    """pass@num_samples of a generative task view (completions decoded with their special tokens)."""
    n = len(view) if max_problems < 0 else min(len(view), max_problems)
    mine = range(world.rank, n, world.size)
    passed = 0.0
    for done, i in enumerate(mine, 1):
        faults.hit("step")  # NANOCHAT_FAULT: mid-task
        conv = view[i]
        prompt = tok.render_for_completion(conv)
        results, _ = engine.generate_batch(prompt, num_samples=num_samples, max_tokens=max_new_tokens,
                                           temperature=temperature, top_k=top_k, seed=i)
        passed += float(any(view.task.evaluate(conv, tok.decode(r[len(prompt):])) for r in results))
        if progress and done % 10 == 0:
            progress(f"{view.task.name}: {done}/{len(mine)} on this process, {passed / done:.3f} so far")
    passed, total = world.all_reduce_sum([passed, float(len(mine))])
    return {"accuracy": passed / max(total, 1), "baseline": 0.0, "problems": int(total)}


def centered(accuracy: float, baseline: float) -> float:
    return (accuracy - baseline) / (1 - baseline)


def chatcore(results: dict) -> float:
    """Mean centred accuracy over the evaluated tasks ({name: {"accuracy", "baseline"}})."""
    return sum(centered(r["accuracy"], r["baseline"]) for r in results.values()) / len(results)


def evaluate_tasks(model, tok, task_views, *, settings, world, device, done: dict, log, record) -> dict:
    """Score every view; the one loop behind the chat-eval stage and `nanochat eval`.

    `settings` has batch_size, num_samples, max_new_tokens, temperature, top_k and max_problems; `done`
    holds results already recorded (resume: those tasks are not run again); `record(result)` is called
    with each new result as soon as it is known, so an interruption keeps every finished task.
    """
    from nanochat.engine import Engine
    from nanochat.tasks import task_label
    engine = Engine(model, tok)
    results = {}
    for view in task_views:
        label = task_label(view)
        if label in done:
            results[label] = done[label]
            log(f"{label}: {done[label]['accuracy']:.4f} (already evaluated)")
            continue
        faults.hit("loader")  # NANOCHAT_FAULT: before a task's problems are read
        log(f"{label}: evaluating ({view.task.kind}, {len(view) if settings.max_problems < 0 else min(len(view), settings.max_problems)} problems)")
        if view.task.kind == "categorical":
            r = evaluate_categorical(model, tok, view, batch_size=settings.batch_size, device=device, world=world,
                                     max_problems=settings.max_problems, progress=log)
        elif view.task.kind == "generative":
            r = evaluate_generative(engine, tok, view, num_samples=settings.num_samples,
                                    max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                                    top_k=settings.top_k, world=world, max_problems=settings.max_problems, progress=log)
        else:
            log(f"{label}: skipped ({view.task.kind} tasks have no evaluation)")
            continue
        results[label] = {"task": label, "kind": view.task.kind, **r}
        record(results[label])
        log(f"{label}: accuracy {r['accuracy']:.4f} on {r['problems']} problems "
            f"(random {r['baseline']:.3f}, centred {centered(r['accuracy'], r['baseline']):.4f})")
    return results


def chatcore_summary(results: dict) -> tuple[str, float] | None:
    """("ChatCORE", score) over the standard set when it all ran, else ("ChatCORE (these tasks)", score)."""
    if not results:
        return None
    if set(STANDARD) <= set(results):
        return "ChatCORE", chatcore({k: results[k] for k in STANDARD})
    return "ChatCORE (these tasks)", chatcore(results)
