"""A small, randomly initialised Whisper of the real architecture, written as a complete model dir
(weights, tokenizer, feature extractor, generation config) without any network.

Its words are random, but they come through the same pipeline, timestamp and word-timing code as
real Whisper's, in well under a second per 30 s window.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)
from transformers.models.whisper.tokenization_whisper import LANGUAGES

# Whisper's timestamp tokens: 0.00 to 30.00 s in 0.02 s steps.
TIMESTAMPS = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
# Decoding stops here at the latest, so random decoding stays fast.
MAX_LENGTH = 40


def _text_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE: the 256 byte symbols plus "space + letter" merges, so that random decoding
    starts new words often."""
    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    space = "Ġ"  # the byte-level symbol of " "
    merges = [(space, letter) for letter in string.ascii_lowercase]
    vocab = {symbol: i for i, symbol in enumerate(symbols)}
    for left, right in merges:
        vocab[left + right] = len(vocab)
    return vocab, merges


def build_tiny_whisper(
    model_dir: Path,
    multilingual: bool = False,
    seed: int = 0,
    width: int = 64,
    layers: int = 2,
    max_length: int = MAX_LENGTH,
) -> Path:
    """Writes the model dir and returns it. English-only by default; `multilingual` adds the
    language and task tokens that make Whisper detect or take a language. `width=384, layers=4,
    max_length=448` make a model that computes as much as whisper-tiny.en and decodes garbage as
    long as Whisper may: a slow case."""
    model_dir.mkdir(parents=True, exist_ok=True)
    vocab, merges = _text_vocab()
    languages = [f"<|{code}|>" for code in LANGUAGES] if multilingual else []
    specials = [
        "<|endoftext|>",
        "<|startoftranscript|>",
        *languages,
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nocaptions|>",
        "<|notimestamps|>",
    ]

    tokenizer = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, continuing_subword_prefix="", end_of_word_suffix="")
    )
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in TIMESTAMPS])
    tokenizer.save(str(model_dir / "tokenizer.json"))
    (model_dir / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "WhisperTokenizer",
                "bos_token": "<|endoftext|>",
                "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
                "add_prefix_space": False,
                "model_max_length": 1024,
            }
        )
    )

    def token_id(token: str) -> int:
        return tokenizer.token_to_id(token)

    eos = token_id("<|endoftext|>")
    start = token_id("<|startoftranscript|>")
    config = WhisperConfig(
        vocab_size=tokenizer.get_vocab_size(),
        num_mel_bins=80,
        d_model=width,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=2 * width,
        decoder_ffn_dim=2 * width,
        max_source_positions=1500,  # 30 s of 10 ms mel frames, halved by the conv stem
        max_target_positions=448,
        decoder_start_token_id=start,
        bos_token_id=start,
        eos_token_id=eos,
        pad_token_id=eos,
        begin_suppress_tokens=[token_id("Ġ"), eos],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    with torch.no_grad():
        # At the default init scale random logits are nearly flat, and the timestamp rule (pick a
        # timestamp when all timestamps together outweigh the best text token) would emit only
        # timestamps: larger output weights for letters and "space + letter" make those win. Large
        # position embeddings make each step pick a different token instead of one on repeat.
        letters = [i for t, i in vocab.items() if t.lstrip("Ġ") and t.lstrip("Ġ") in string.ascii_lowercase]
        model.proj_out.weight[letters] *= 50.0
        model.model.decoder.embed_positions.weight *= 50.0

    generation = GenerationConfig(
        decoder_start_token_id=start,
        bos_token_id=start,
        eos_token_id=eos,
        pad_token_id=eos,
        max_length=max_length,
        alignment_heads=[[1, 0], [1, 1]],
        no_timestamps_token_id=token_id("<|notimestamps|>"),
        prev_sot_token_id=token_id("<|startofprev|>"),
        max_initial_timestamp_index=50,
        begin_suppress_tokens=[token_id("Ġ"), eos],
        suppress_tokens=[],
        is_multilingual=multilingual,
        return_timestamps=False,
    )
    if multilingual:
        generation.lang_to_id = {t: token_id(t) for t in languages}
        generation.task_to_id = {task: token_id(f"<|{task}|>") for task in ("transcribe", "translate")}
    model.generation_config = generation
    model.save_pretrained(model_dir)

    processor = WhisperProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=80),
        tokenizer=WhisperTokenizer.from_pretrained(model_dir),
    )
    processor.save_pretrained(model_dir)
    return model_dir
