"""The numbers of a Hedgehog conversion over several seeds: recovery, mean and spread, markdown.

Per seed ``s`` and student, ``recovery_s = student accuracy_s / teacher accuracy_s`` (each seed's
student against its own teacher); over seeds, the mean and the standard deviation of every
accuracy and every recovery (``experiments.seeds.seed_summary``: population std, 0 for one seed).
"""

from experiments.seeds import seed_summary

STAGES = ("converted", "finetuned")


def add_recovery(seed_result: dict, students: list[str]) -> dict:
    """Adds ``recovery = {stage: student accuracy / teacher accuracy}`` to each student of one seed."""
    teacher = seed_result["teacher"]["accuracy"]
    for name in students:
        entry = seed_result[name]
        entry["recovery"] = {stage: entry[stage]["accuracy"] / teacher for stage in STAGES}
    return seed_result


def summarise(per_seed: dict[str, dict], students: list[str]) -> dict:
    """Over seeds: the teacher's accuracy, each student's accuracy and recovery per stage, each as
    :func:`spread` (values in the order of ``per_seed``)."""
    seeds = list(per_seed)
    summary = {"teacher": seed_summary([per_seed[s]["teacher"]["accuracy"] for s in seeds])}
    for name in students:
        summary[name] = {
            stage: seed_summary([per_seed[s][name][stage]["accuracy"] for s in seeds]) for stage in STAGES
        } | {f"recovery_{stage}": seed_summary([per_seed[s][name]["recovery"][stage] for s in seeds]) for stage in STAGES}
    return summary


def _mean_std(entry: dict, percent: bool = False) -> str:
    scale, unit = (100.0, " %") if percent else (1.0, "")
    return f"{scale * entry['mean']:.{1 if percent else 4}f} ± {scale * entry['std']:.{1 if percent else 4}f}{unit}"


def markdown(results: dict) -> str:
    """One row per seed and a ``mean ± std`` row: the teacher, then per student its accuracy as
    converted and fine-tuned with the recovery of each; then the distillation's fit per seed."""
    students, per_seed, summary = results["students"], results["per_seed"], results["summary"]
    header = ["seed", "teacher"] + [f"{name} {column}" for name in students
                                    for column in ("converted", "fine-tuned", "recovery conv.", "recovery ft.")]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for seed, result in per_seed.items():
        cells = [seed, f"{result['teacher']['accuracy']:.4f}"]
        for name in students:
            entry = result[name]
            cells += [f"{entry['converted']['accuracy']:.4f}", f"{entry['finetuned']['accuracy']:.4f}",
                      f"{100 * entry['recovery']['converted']:.1f} %", f"{100 * entry['recovery']['finetuned']:.1f} %"]
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["mean ± std", _mean_std(summary["teacher"])]
    for name in students:
        entry = summary[name]
        cells += [_mean_std(entry["converted"]), _mean_std(entry["finetuned"]),
                  _mean_std(entry["recovery_converted"], True), _mean_std(entry["recovery_finetuned"], True)]
    lines.append("| " + " | ".join(cells) + " |")
    if "hedgehog" in students:
        lines += ["", "| seed | distillation loss first -> last | teacher entropy (nats) | teacher max weight | "
                  "KL before -> after | total variation before -> after | top-key agreement after |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for seed, result in per_seed.items():
            loss, fit = result["hedgehog"]["distillation_loss"], result["hedgehog"]["attention_fit"]
            before, after = fit["identity_maps"], fit["distilled_maps"]
            lines.append(
                f"| {seed} | {loss['first']:.3f} -> {loss['last']:.3f} | {after['teacher_entropy']:.3f} | "
                f"{after['teacher_max']:.3f} | {before['kl']:.3f} -> {after['kl']:.3f} | "
                f"{before['total_variation']:.3f} -> {after['total_variation']:.3f} | {after['top_key_agreement']:.3f} |"
            )
    return "\n".join(lines) + "\n"
