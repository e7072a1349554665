"""The accelerate configs shipped for GPU clusters load with accelerate's own loader, as `accelerate
launch --config_file` reads them, and say what docs/scale.md says they do."""
from pathlib import Path

import pytest
from accelerate import DistributedType
from accelerate.commands.config.config_args import load_config_from_file

CONFIGS = Path(__file__).resolve().parents[2] / "recipes" / "accelerate"


@pytest.mark.parametrize("name, kind, check", [
    ("ddp.yaml", DistributedType.MULTI_GPU, lambda c: c.num_machines == 1),
    ("multi-node.yaml", DistributedType.MULTI_GPU, lambda c: c.num_machines == 2 and c.main_process_ip),
    ("fsdp.yaml", DistributedType.FSDP, lambda c: c.fsdp_config["fsdp_version"] == 2
     and c.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"),
    ("deepspeed-zero2.yaml", DistributedType.DEEPSPEED, lambda c: c.deepspeed_config["zero_stage"] == 2),
    ("deepspeed-zero3.yaml", DistributedType.DEEPSPEED, lambda c: c.deepspeed_config["zero_stage"] == 3
     and c.deepspeed_config["zero3_save_16bit_model"]),
])
def test_config_loads_as_accelerate_reads_it(name, kind, check):
    config = load_config_from_file(str(CONFIGS / name))
    assert config.distributed_type == kind
    assert check(config)


def test_every_shipped_config_is_covered():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(
        ["ddp.yaml", "multi-node.yaml", "fsdp.yaml", "deepspeed-zero2.yaml", "deepspeed-zero3.yaml"])
