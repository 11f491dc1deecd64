# Overlay grids of a few fixed test videos per (scenario, seed): every method at the final step side by side,
# and the main method (the first configured) across its steps. Off the summary's path: `all` asks for them,
# `summarize` never does. `visual_videos: 0` turns them off.

VISUALS = f"{RESULTS}/visuals"


def visual_videos():
    return int(config.get("visual_videos", 0) or 0)


def visual_main_method():
    """The method drawn across its steps: hvpl when configured, else the first configured method."""
    return "hvpl" if "hvpl" in METHOD_NAMES else METHOD_NAMES[0]


def visual_inputs(wildcards):
    """Final-step predictions of every method, and every step's of the main method."""
    sc, seed = wildcards.scenario, wildcards.seed
    if sc not in SCENARIOS:
        raise WorkflowError(f"scenario '{sc}' is not configured (config scenarios: {', '.join(SCENARIOS)})")
    final = n_steps(sc) - 1
    main = visual_main_method()
    return {"final": [f"{step_dir(sc, m, seed, final)}/predictions.json" for m in METHOD_NAMES],
            "steps": [f"{step_dir(sc, main, seed, t)}/predictions.json" for t in run_steps(sc, main)],
            "split": split_dir(sc)}


def visual_outputs():
    """The visuals folders `all` asks for (none with visual_videos: 0)."""
    if visual_videos() <= 0:
        return []
    return [f"{VISUALS}/{sc}/seed{s}/{kind}" for sc in SCENARIOS for s in SEEDS for kind in ("methods", "steps")]


rule visualize:
    """Overlay grids (ground truth + predictions over sampled frames) of the same test videos: methods at the
    final step, and the main method after each step (forgetting made visible)."""
    input:
        unpack(visual_inputs),
    output:
        methods=report(
            directory(f"{VISUALS}/{{scenario}}/seed{{seed}}/methods"),
            patterns=["{name}.png"],
            caption="../report/visuals.rst",
            category="Visuals",
            subcategory="Methods at the final step",
        ),
        steps=report(
            directory(f"{VISUALS}/{{scenario}}/seed{{seed}}/steps"),
            patterns=["{name}.png"],
            caption="../report/visuals.rst",
            category="Visuals",
            subcategory="Main method across steps",
        ),
    params:
        test_json=lambda wildcards: split_file(wildcards.scenario, f"test_step{n_steps(wildcards.scenario) - 1}.json"),
        classes=lambda wildcards: split_file(wildcards.scenario, "classes.json"),
        videos=visual_videos(),
    resources:
        **cluster_resources("visualize"),
    log:
        f"{LOGS}/{{scenario}}/visualize_seed{{seed}}.log",
    conda:
        "../../envs/hvpl.yaml"
    shell:
        "(hvpl visualize --test-json {params.test_json} --classes {params.classes} --num-videos {params.videos} "
        "--predictions {input.final} --out-dir {output.methods} "
        "&& hvpl visualize --test-json {params.test_json} --classes {params.classes} --num-videos {params.videos} "
        "--predictions {input.steps} --out-dir {output.steps}) > {log} 2>&1"
