"""Run folders are named with the image size actually trained, not the one in the config's name."""

from segkit.workflows import runs


def config(name, size):
    return {"name": name, "data": {"size": size}}


def test_a_smaller_smoke_size_replaces_the_configs_size_suffix(tmp_path):
    assert runs.run_name(config("unet-r34_cityscapes-pairs_256x256", [128, 128])) == "unet-r34_cityscapes-pairs_128x128"
    assert runs.run_name(config("unet-r34_camvid_352x480", [128, 160])) == "unet-r34_camvid_128x160"
    # A size followed by a budget part (the CPU recipes) is the size too; digits inside other parts are not.
    assert runs.run_name(config("fastscnn_cityscapes-pairs_256x256_cpu-35min", [64, 64])) == "fastscnn_cityscapes-pairs_64x64_cpu-35min"
    assert runs.run_name(config("unet-r34_pairs-2x3_cpu_128x128", [64, 64])) == "unet-r34_pairs-2x3_cpu_64x64"
    run = runs.Run.create(tmp_path, config("pspnet-r34_cityscapes-pairs_256x256", [64, 64]))
    assert run.path.name.startswith("pspnet-r34_cityscapes-pairs_64x64-")


def test_names_without_a_size_suffix_or_runs_without_a_size_keep_the_config_name():
    assert runs.run_name(config("tiny", [32, 32])) == "tiny"
    assert runs.run_name(config("unet-r34_synthetic_128x128", None)) == "unet-r34_synthetic_128x128"
