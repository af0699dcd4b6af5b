"""DVC stage ``distill``: scale distillation of the SRDD teacher into a shorter schedule.

Reads ``params.yaml: distill``, the Markov teacher (``models/srdd.pt``), the tokenizer and the
prepared data; writes ``models/srdd_distilled.pt`` (with ``teacher_patch_nums``),
``reports/distill/samples.png`` (one row per class), ``metrics/distill.json`` and
``plots/distill.csv``; resumes from ``state/distill/last.pt``.

Metrics: both schedules and what the short one saves (scales = forward passes, tokens), the
student's teacher-forced test loss and accuracy by scale on the short schedule (at
initialisation and after distillation; the teacher's on its own schedule alongside), the
tokenizer's test PSNR with the full and the short schedule, sampling images/s of teacher and
student measured side by side and the speed-up, and the class-mean proxy of the samples.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from scalewise.models.checkpoints import load_tokenizer, load_transformer, save_model
from scalewise.core.config import to_dict
from scalewise.data.prepare import load_split
from scalewise.training.distill import (
    DistillConfig, distill, sampling_speed, schedule_savings, student_schedule, tokenizer_psnr,
)
from scalewise.models.student import check_markov_teacher, init_student, tokenizer_for
from scalewise.core.images import save_grid, to_uint8
from scalewise.core.io import write_json
from scalewise.sampling.generate import generate
from scalewise.training.batches import encode_dataset
from scalewise.training.transformer import class_mean_proxy, evaluate_transformer
from scalewise.project.entry import load_params, run_main, stage_config, stage_parser, tracked, write_curve

VARIANT = "srdd_distilled"


def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--tokenizer", default="models/tokenizer.pt")
    ap.add_argument("--teacher", default="models/srdd.pt", help="a Markov (mask_kind: markov) transformer")
    args = ap.parse_args()

    params = load_params(args.params)
    cfg = stage_config(DistillConfig, params, "distill", args.params)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out_model, reports = Path(f"models/{VARIANT}.pt"), Path("reports/distill")

    tokenizer = load_tokenizer(args.tokenizer, cfg.device)
    teacher = load_transformer(args.teacher, cfg.device)
    check_markov_teacher(teacher)
    student_pn = student_schedule(teacher.cfg.patch_nums, cfg)
    train_u8, train_labels, class_names = load_split(args.data, "train")
    test_u8, test_labels, _ = load_split(args.data, "test")
    data_hash = json.loads((Path(args.data) / "manifest.json").read_text())["content_hash"]

    with tracked("distill", params, {"distill": to_dict(cfg), "teacher": args.teacher}) as tracker:
        tracker.set_tags({"scalewise.model": VARIANT, "scalewise.mask_kind": teacher.cfg.mask_kind,
                          "scalewise.patch_nums": str(student_pn)})
        result = distill(cfg, teacher, tokenizer, train_u8, train_labels, data_hash, "state/distill",
                         on_log=lambda step, row: tracker.log_metrics({f"distill/{k}": v for k, v in row.items()}, step))
        if result.resumed_from:
            print(f"distill: resumed from step {result.resumed_from}, {result.steps_run} training steps run")
        student = result.model
        short = tokenizer_for(student, tokenizer)
        test_tokens, test_x = encode_dataset(short, test_u8, progress=False)
        metrics = schedule_savings(teacher.cfg.patch_nums, student_pn)
        metrics.update(evaluate_transformer(student, test_tokens, test_x, test_labels))
        metrics["student_init_test_loss"] = evaluate_transformer(
            init_student(teacher, student_pn), test_tokens, test_x, test_labels)["test_loss"]
        full_tokens, full_x = encode_dataset(tokenizer, test_u8, progress=False)
        metrics["teacher_test_loss"] = evaluate_transformer(teacher, full_tokens, full_x, test_labels)["test_loss"]
        metrics.update(tokenizer_psnr(tokenizer, student_pn, test_u8))
        metrics.update(sampling_speed(teacher, student, tokenizer, cfg.bench_batch, cfg.grid_cfg, cfg.bench_runs,
                                      cfg.seed))

        labels = torch.arange(len(class_names)).repeat_interleave(cfg.grid_per_class)
        gen = generate(student, short, labels, cfg=cfg.grid_cfg, seed=cfg.seed)
        grid = save_grid(gen.images, reports / "samples.png", nrow=cfg.grid_per_class)
        metrics.update({
            "variant": VARIANT, "steps": cfg.steps,
            "final_train_loss": result.history[-1]["loss"], "final_train_kl": result.history[-1]["kl"],
            "class_mean_proxy": class_mean_proxy(to_uint8(gen.images), labels, train_u8, train_labels,
                                                 len(class_names)),
        })
        save_model(out_model, student, class_names=class_names, variant=VARIANT,
                   teacher_patch_nums=list(teacher.cfg.patch_nums))
        write_json("metrics/distill.json", metrics)
        write_curve("plots/distill.csv", result.history, ["step", "loss", "ce", "kl", "acc", "lr"])
        tracker.log_metrics({
            "_headline/test_loss": metrics["test_loss"], "_headline/speedup": metrics["speedup"],
            "test/loss": metrics["test_loss"], "test/init_loss": metrics["student_init_test_loss"],
            "test/teacher_loss": metrics["teacher_test_loss"], "test/class_mean_proxy": metrics["class_mean_proxy"],
            "sampling/speedup": metrics["speedup"], "sampling/steps_saved": metrics["steps_saved"],
            "sampling/teacher_images_per_s": metrics["teacher_images_per_s"],
            "sampling/student_images_per_s": metrics["student_images_per_s"],
            "tokenizer/psnr_full": metrics["tokenizer_psnr_full"], "tokenizer/psnr_short": metrics["tokenizer_psnr_short"],
        }, step=cfg.steps)
        tracker.log_metrics({f"test/acc_scale_{k}": a for k, a in enumerate(metrics["test_acc_by_scale"], 1)},
                            step=cfg.steps)
        tracker.log_artifacts([grid, "metrics/distill.json", "plots/distill.csv"])
        tracker.log_model(out_model, args.tokenizer)  # the report stage registers it
    print(f"distill: {metrics['teacher_patch_nums']} -> {student_pn} ({metrics['steps_saved']} steps saved), "
          f"test loss {metrics['test_loss']:.3f} (at init {metrics['student_init_test_loss']:.3f}), "
          f"sampling x{metrics['speedup']:.2f}, tokenizer PSNR {metrics['tokenizer_psnr_short']:.1f} dB "
          f"(full {metrics['tokenizer_psnr_full']:.1f}), class-mean proxy {metrics['class_mean_proxy']:.2f}")


if __name__ == "__main__":
    run_main(main)
