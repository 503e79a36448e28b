"""Stage `base-eval`: how good is the base model — bits per byte on train and validation text, and samples.

(CORE, the DCLM benchmark, is its own stage `core-eval`.)
"""
from dataclasses import dataclass

import torch

from nanochat import faults
from nanochat.checkpoint import load_model
from nanochat.data import PackedLoader, document_source
from nanochat.datasets import documents_by_language, resolve
from nanochat.evaluation.bpb import documents_bpb, evaluate_bpb
from nanochat.stages import CommonSettings
from nanochat.training import SAMPLE_PROMPTS, greedy_samples


class BaseEvalStage:
    name = "base-eval"
    needs = ("tokenizer", "base-model")
    produces = ()

    @dataclass
    class Settings(CommonSettings):
        dataset: str = "climbmix"
        split_tokens: int = 40 * 524288  # tokens evaluated per split
        device_batch_size: int = 32
        samples: int = 8  # unconditioned samples at temperature 1
        sample_tokens: int = 128
        dtype: str = "auto"

    def run(self, ctx):
        s, world, device = ctx.settings, ctx.world, ctx.device
        tok = ctx.tokenizer()
        ctx.run.keep_metrics(ctx.name, lambda r: False)  # an interrupted attempt starts again: its record goes
        model, ckpt = load_model(ctx.artifact("base-model"), device, ctx.compute_dtype(s.dtype))
        T = model.config.sequence_len
        token_bytes = torch.tensor(tok.token_bytes(), dtype=torch.int64, device=device)
        dataset = resolve(s.dataset, ctx.registry)
        steps = max(1, s.split_tokens // (s.device_batch_size * T * world.size))
        ctx.log(f"evaluating {ckpt.path} (step {ckpt.step}) on {s.dataset}: {steps} batches of "
                f"{s.device_batch_size} x {T} per split and process")
        results = {}
        for split in ("train", "val"):
            source = document_source(dataset, tok, split, rank=world.rank, world=world.size)
            loader = PackedLoader(source, batch_size=s.device_batch_size, seq_len=T, bos_id=tok.bos_id, device=device)
            results[f"{split}_bpb"] = evaluate_bpb(model, loader, steps, token_bytes, world)
            loader.close()
            faults.hit("step")  # NANOCHAT_FAULT: between the two splits
            ctx.log(f"{split} bpb: {results[f'{split}_bpb']:.4f}")
        if len(dataset.languages) > 1 and world.is_main:  # a multilingual corpus: how each language fares alone
            for lang, docs in documents_by_language(dataset.iter_documents("val")).items():
                results[f"val_bpb_{lang}"] = documents_bpb(model, tok, docs, seq_len=T, batch_size=s.device_batch_size,
                                                           max_tokens=s.split_tokens, token_bytes=token_bytes)
                ctx.log(f"val bpb ({lang}): {results[f'val_bpb_{lang}']:.4f}")
        ctx.metric({"step": ckpt.step, **results})
        ctx.summary.update(results)

        lines = []
        if world.is_main:
            from nanochat.engine import Engine
            lines = [f"- {text!r}" for text in greedy_samples(model, tok, SAMPLE_PROMPTS)]
            engine = Engine(model, tok)
            for i in range(s.samples):
                text = engine.complete("", max_tokens=s.sample_tokens, temperature=1.0, seed=i)
                lines.append(f"- (unconditioned) {text!r}")
            for line in lines:
                ctx.log(line)
        ctx.write_report("\n".join(["## Base model evaluation", "",
                                    f"- checkpoint: step {ckpt.step}, dataset {s.dataset}",
                                    f"- train bpb: {results['train_bpb']:.4f}", f"- val bpb: {results['val_bpb']:.4f}",
                                    *[f"- val bpb ({key[8:]}): {value:.4f}" for key, value in results.items()
                                      if key.startswith("val_bpb_")],
                                    "", "Samples:", *lines]))
