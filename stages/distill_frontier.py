"""DVC stage ``distill_frontier``: students that drop 1, 2, 3, ... scales, speed-up against FID.

Reads ``params.yaml: distill_frontier`` (the students, by the teacher scales each leaves out)
and trains each with ``distill``'s settings (resumable, ``state/distill_frontier/<name>/``),
then samples teacher and students with ``evaluate.sampling``'s CFG (``samples_per_class``
images per class, in this process) and scores them like ``evaluate`` (FID, precision, recall);
speed-ups are timed side by side with the teacher. Writes ``models/distill_frontier/<name>.pt``,
``metrics/distill_frontier.json`` (``{teacher, students: {name: record}, chosen, why}``: the
default rule of :func:`scalewise.evaluation.distill_frontier.choose_student`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from tqdm import tqdm

from scalewise.core.config import ConfigError, to_dict
from scalewise.core.io import write_json
from scalewise.data.prepare import load_split
from scalewise.evaluation.distill_frontier import DistillFrontierConfig, choose_student
from scalewise.evaluation.fidelity import fidelity_metrics, resolve_extractor
from scalewise.evaluation.plan import EvaluateConfig, reference_key
from scalewise.evaluation.settings import SamplingSetting, generate_set, setting_from
from scalewise.models.checkpoints import load_tokenizer, load_transformer, save_model
from scalewise.models.student import check_markov_teacher
from scalewise.project.entry import load_params, run_main, stage_config, stage_parser, tracked
from scalewise.training.distill import DistillConfig, distill, sampling_speed, student_schedule


def main() -> None:
    ap = stage_parser(__doc__)
    ap.add_argument("--tokenizer", default="models/tokenizer.pt")
    ap.add_argument("--teacher", default="models/srdd.pt")
    ap.add_argument("--evaluator", default="models/evaluator.pt")
    ap.add_argument("--cache", default=".cache/fidelity", help="torch-fidelity reference statistics cache")
    args = ap.parse_args()

    params = load_params(args.params)
    cfg = stage_config(DistillFrontierConfig, params, "distill_frontier", args.params)
    dcfg = stage_config(DistillConfig, params, "distill", args.params)
    ev = stage_config(EvaluateConfig, params, "evaluate", args.params)
    setting = setting_from(SamplingSetting(), ev.sampling, "evaluate.sampling")
    if dcfg.threads:
        torch.set_num_threads(dcfg.threads)
    tokenizer = load_tokenizer(args.tokenizer, dcfg.device)
    teacher = load_transformer(args.teacher, dcfg.device)
    check_markov_teacher(teacher)
    schedules = {}
    for name, drop in cfg.students.items():
        try:
            schedules[name] = student_schedule(teacher.cfg.patch_nums, dataclasses.replace(dcfg, drop=drop, patch_nums=None))
        except ConfigError as exc:
            raise ConfigError(f"{args.params}: distill_frontier.students.{name}: {exc}") from exc
    train_u8, train_labels, class_names = load_split(args.data, "train")
    test_u8, _, _ = load_split(args.data, "test")
    data_hash = json.loads((Path(args.data) / "manifest.json").read_text())["content_hash"]
    extractor = resolve_extractor(args.evaluator, ev.inception_weights)
    ref_key = reference_key(args.data)

    def scored(model_path: str) -> dict:
        s = generate_set(model_path, args.tokenizer, setting, cfg.samples_per_class, ev.batch_size, ev.seed,
                         dcfg.device, dcfg.threads)
        m = fidelity_metrics(s.images_u8, test_u8, extractor, kid_subset_size=ev.kid_subset_size,
                             cache_dir=args.cache, reference_key=ref_key, device=dcfg.device)
        return {k: m[k] for k in ("fid", "isc", "kid", "precision", "recall")} | {"images_per_s": s.images_per_s}

    with tracked("distill_frontier", params, {"distill_frontier": to_dict(cfg), "distill": to_dict(dcfg)}) as tracker:
        teacher_rec = {"patch_nums": list(teacher.cfg.patch_nums), **scored(args.teacher)}
        students = {}
        for name, pn in tqdm(schedules.items(), desc="distill_frontier"):
            scfg = dataclasses.replace(dcfg, drop=cfg.students[name], patch_nums=None)
            result = distill(scfg, teacher, tokenizer, train_u8, train_labels, data_hash,
                             f"state/distill_frontier/{name}", progress=False)
            path = save_model(f"models/distill_frontier/{name}.pt", result.model, class_names=class_names,
                              variant=name, teacher_patch_nums=list(teacher.cfg.patch_nums))
            speed = sampling_speed(teacher, result.model, tokenizer, dcfg.bench_batch, setting.cfg, dcfg.bench_runs,
                                   dcfg.seed)
            students[name] = {"drop": list(cfg.students[name]), "patch_nums": pn, **scored(str(path)),
                              "speedup": speed["speedup"], "final_train_loss": result.history[-1]["loss"]}
            tracker.log_metrics({f"{name}/{k}": float(students[name][k]) for k in ("fid", "recall", "speedup")})
            print(f"distill_frontier: {name} {pn}: FID {students[name]['fid']:.3f} (teacher {teacher_rec['fid']:.3f}), "
                  f"x{speed['speedup']:.2f}")
        chosen, why = choose_student(students, teacher_rec["fid"], cfg.fid_margin, cfg.min_speedup)
        path = write_json("metrics/distill_frontier.json",
                          {"teacher": teacher_rec, "students": students, "chosen": chosen, "why": why,
                           "samples_per_class": cfg.samples_per_class})
        tracker.set_tags({"scalewise.chosen_student": chosen})
        tracker.log_artifact(path)
    print(f"distill_frontier: default rule picks {chosen} ({why})")


if __name__ == "__main__":
    run_main(main)
