"""The LLaVA scene-check worker: per image, a calibrated yes/no score, a caption or an answer; warm, batched.

Recipe: check_inputs (every image exists and decodes; no torch yet) -> load (cached per model, device, dtype) ->
per request: the text for each image -> batches of `batch_size` through the OOM ladder -> scores from the
next-token logits (`validate`) or greedy generation (`caption`, `ask`, `explain`) -> result (+ JSON report).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from workers.runtime import FieldErrors, JobContext, Worker, input_file
from workers.runtime.devices import dtype_name, torch_device
from workers.runtime.imaging import downscale, image_problem, load_rgb
from workers.runtime.oom_ladder import SMALLER_BATCH, MemoryLadder

from . import __version__, llava, scoring
from .contract import SHORT_ANSWER_SUFFIX, Args, ImageItem, ItemResult, Result

REASON_SUFFIX = " Answer yes or no, then give the reason in one sentence."
REPORT_MEDIA_TYPE = "application/json"


@dataclass
class Job:
    """One image and the exact text(s) sent with it."""

    index: int
    item: ImageItem
    question: str
    reason_question: str | None = None


def plan(args: Args) -> list[Job]:
    jobs = []
    for index, item in enumerate(args.items()):
        if args.task == "validate":
            question = item.question or args.validate_template.replace("{expected}", item.expected or "")
            reason = question.removesuffix(SHORT_ANSWER_SUFFIX) + REASON_SUFFIX  # the same question, answered longer
            jobs.append(Job(index, item, question, reason if args.explain else None))
        elif args.task == "caption":
            jobs.append(Job(index, item, args.caption_prompt))
        else:
            jobs.append(Job(index, item, item.question or args.question or ""))
    return jobs


def _image_field(args: Args, index: int) -> str:
    return f"images[{index}]" + (".path" if isinstance(args.images[index], ImageItem) else "")


class VisionWorker(Worker[Args, Result]):
    name = "vision"
    version = __version__
    Args = Args
    Result = Result
    extra = "vision"
    requires = ("torch", "transformers", "PIL", "safetensors")
    model_key_fields = ("model", "device", "dtype", "trust_remote_code")

    # --- cheap checks, no torch ----------------------------------------------------------------------------
    def check_inputs(self, args: Args) -> None:
        problems = FieldErrors()
        for index, item in enumerate(args.items()):
            field = _image_field(args, index)
            resolved = problems.attempt(input_file, item.path, field)  # exists, readable, under the allowed roots
            reason = image_problem(resolved) if resolved is not None else None
            if reason:
                problems.add(f"$.{field}", f"image {item.path!r} {reason}", "bad_file")
        problems.raise_if_any(f"invalid input for worker '{self.name}'")

    def model_key(self, args: Args) -> str:
        """Resolved, so `auto`/`cuda`/`cuda:0`, `auto`/`float16` or a hub id and its cached directory share one
        loaded model instead of reloading it."""
        directory, _ = llava.model_dir(args)
        device = torch_device(args.device)
        return f"{directory}|{device}|{_dtype(args, device)}|remote_code={args.trust_remote_code}"

    # --- load ------------------------------------------------------------------------------------------------
    def load(self, args: Args, ctx: JobContext) -> llava.VisionModel:
        directory, model_type = llava.model_dir(args)  # before torch: a missing or wrong model fails fast
        device = torch_device(args.device)
        dtype = _dtype(args, device)
        ctx.progress(0.0, "loading model", model=args.model, device=device, dtype=dtype)
        return llava.load(args, device, dtype, directory, model_type)

    # --- run -------------------------------------------------------------------------------------------------
    def run(self, model: llava.VisionModel, args: Args, ctx: JobContext) -> Result:
        check_texts(args, special_tokens(model))
        jobs = plan(args)
        tokens = model.answer_tokens() if args.task == "validate" else None
        if tokens is not None and not tokens.whole_words:
            ctx.warn("the tokenizer has no single-token 'Yes'/'No'; scores use the first piece of each variant "
                     f"(yes {tokens.yes_tokens}, no {tokens.no_tokens})")
        ladder = MemoryLadder((SMALLER_BATCH,), batch_size=args.batch_size, accelerator=model.device.startswith("cuda"),
                              apply=lambda rung: None, warn=ctx.warn)
        done: list[ItemResult] = []

        def one_batch(chunk: list[Job]) -> list[ItemResult]:
            results = _run_batch(model, args, chunk)
            for result in results:
                done.append(result)
                ctx.progress(len(done) / len(jobs), "image done", index=result.index, path=result.path,
                             score=result.score, match=result.match)
            return results

        items = ladder.run(jobs, one_batch)
        validate = args.task == "validate"
        matched = sum(bool(i.match) for i in items) if validate else None
        ctx.extra_metrics.update(images=len(items), matched=matched, batch_size=ladder.batch_size,
                                 memory_rung=ladder.rung)
        result = Result(task=args.task, items=items, threshold=args.threshold if validate else None,
                        matched=matched, all_match=matched == len(items) if validate else None,
                        yes_tokens=tokens.yes_tokens if tokens else [], no_tokens=tokens.no_tokens if tokens else [],
                        report_path=str(ctx.final_path(args.report)) if args.report else None, model=args.model,
                        model_type=model.model_type, device=model.device, dtype=model.dtype,
                        batch_size=ladder.batch_size, memory_rung=ladder.rung)
        if args.report:
            report = json.dumps(result.model_dump(mode="json"), ensure_ascii=False, indent=2) + "\n"
            ctx.output_path(args.report, REPORT_MEDIA_TYPE).write_text(report, encoding="utf-8")
        return result


def _dtype(args: Args, device: str) -> str:
    return dtype_name(args.dtype, device, cuda_default="float16")  # LLaVA checkpoints ship in fp16


def special_tokens(model: llava.VisionModel) -> list[str]:
    """Strings the tokenizer turns into control tokens (`<image>`, `</s>`...): never allowed in user text."""
    tokenizer = model.processor.tokenizer
    found = set(getattr(tokenizer, "all_special_tokens", [])) | {getattr(model.processor, "image_token", None)}
    return sorted(t for t in found if t)


def check_texts(args: Args, specials: list[str]) -> None:
    """`invalid_input` for text holding a special token: one `<image>` too many makes the processor fail the batch."""
    problems = FieldErrors()
    texts = {"$.validate_template": args.validate_template if args.task == "validate" else None,
             "$.caption_prompt": args.caption_prompt if args.task == "caption" else None,
             "$.question": args.question if args.task == "ask" else None}
    for index, item in enumerate(args.items()):
        texts[f"$.images[{index}].expected"] = item.expected
        texts[f"$.images[{index}].question"] = item.question
    for path, text in texts.items():
        found = [token for token in specials if text and token in text]
        if found:
            problems.add(path, f"{path[2:]} contains {', '.join(map(repr, found))}, a control token of this model; "
                         "remove or reword it", "special_token")
    problems.raise_if_any("text holds control tokens of the model")


def _run_batch(model: llava.VisionModel, args: Args, chunk: list[Job]) -> list[ItemResult]:
    images, sizes = [], []
    for job in chunk:
        # the file checked is the file read: resolved (and checked against the allowed roots) again here
        image = load_rgb(input_file(job.item.path, _image_field(args, job.index)))
        sizes.append(image.size)  # upright, before downscaling
        images.append(downscale(image, args.max_image_side))
    questions = [job.question for job in chunk]
    texts: dict[str, list[Any]] = {}
    if args.task == "validate":
        texts["score"] = scoring.yes_probabilities(model, images, questions)
        if args.explain:
            texts["reason"] = scoring.generate(model, images, [j.reason_question for j in chunk], args.max_new_tokens)
    else:
        key = "caption" if args.task == "caption" else "answer"
        texts[key] = scoring.generate(model, images, questions, args.max_new_tokens)
    results = []
    for row, (job, (width, height)) in enumerate(zip(chunk, sizes, strict=True)):
        fields = {key: values[row] for key, values in texts.items()}
        if "score" in fields:
            fields["match"] = fields["score"] >= args.threshold
        results.append(ItemResult(index=job.index, path=job.item.path, width=width, height=height,
                                  question=job.question, expected=job.item.expected, **fields))
    return results
