# Overlay grids of a few fixed test videos per (scenario, class order, seed): every method at the final step side by side,
# and the main method (hvpl if configured, else the first) across its steps. Off the summary's path: `all` asks for them,
# `summarize` never does. `visual_videos: 0` turns them off. Input functions: inputs.smk (end).

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
