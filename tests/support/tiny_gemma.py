"""A small, randomly initialised Gemma 3n of the real architecture, written as a complete model dir
(config, weights, generation config, tokenizer, audio feature extractor, image processor, processor
and chat template) without any network.

The layout is Gemma 3n's: Gemma's byte-fallback BPE tokenizer with the chat and media special tokens,
the text vocabulary followed by the image and then the audio token ranges, and the processor that
expands one audio token into the encoder's 188 soft tokens. The weights hold no vision tower, like
those the service loads (it never builds one). Its words are random.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch
from tokenizers import AddedToken
from transformers import (
    Gemma3nAudioConfig,
    Gemma3nAudioFeatureExtractor,
    Gemma3nConfig,
    Gemma3nProcessor,
    Gemma3nTextConfig,
    Gemma3nVisionConfig,
    GemmaTokenizer,
    GenerationConfig,
)
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

from services.transcription.gemma import Gemma3nForAudio

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]  # ids 0-4, as in Gemma's tokenizer
CHAT = ["<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<start_of_audio>"]
# Each media range starts with its end token, then its soft token, as in Gemma 3n's vocabulary.
MEDIA_TOKENS = 4
IMAGE = ["<end_of_image>", "<image_soft_token>", "<image_2>", "<image_3>"]
AUDIO = ["<end_of_audio>", "<audio_soft_token>", "<audio_2>", "<audio_3>"]
AUDIO_SOFT_TOKENS = 188  # the encoder's tokens for 30 s of audio, which the processor reserves

# Gemma 3n's chat template, for user and model turns of text, audio and images.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] | trim }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'audio' %}<audio_soft_token>"
    "{% elif item['type'] == 'image' %}<image_soft_token>"
    "{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def _tokenizer() -> GemmaTokenizer:
    """Gemma's tokenizer over a small vocabulary: the special tokens, byte fallback for every byte,
    letters, and "▁ + letter" merges so that random text has words."""
    pieces = [*SPECIALS, *(f"<0x{b:02X}>" for b in range(256)), "▁", *string.ascii_letters]
    merges = [("▁", letter) for letter in string.ascii_lowercase]
    pieces += [left + right for left, right in merges] + CHAT + IMAGE + AUDIO
    tokenizer = GemmaTokenizer(
        vocab={piece: index for index, piece in enumerate(pieces)},
        merges=merges,
        extra_special_tokens={
            "audio_token": "<audio_soft_token>",
            "boa_token": "<start_of_audio>",
            "eoa_token": "<end_of_audio>",
            "image_token": "<image_soft_token>",
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
        },
    )
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in CHAT + IMAGE + AUDIO])
    return tokenizer


def build_tiny_gemma(model_dir: Path, seed: int = 0) -> Path:
    """Writes the model dir and returns it."""
    model_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer()
    text_vocab = len(tokenizer) - 2 * MEDIA_TOKENS
    token = tokenizer.convert_tokens_to_ids
    config = Gemma3nConfig(
        text_config=Gemma3nTextConfig(
            vocab_size=len(tokenizer),
            vocab_size_per_layer_input=text_vocab,
            hidden_size=32,
            hidden_size_per_layer_input=8,
            intermediate_size=64,
            num_hidden_layers=2,
            layer_types=["sliding_attention", "full_attention"],
            num_kv_shared_layers=0,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            altup_num_inputs=2,
            laurel_rank=4,
            sliding_window=64,
            max_position_embeddings=1024,
        ),
        audio_config=Gemma3nAudioConfig(
            vocab_size=MEDIA_TOKENS,
            vocab_offset=text_vocab + MEDIA_TOKENS,
            hidden_size=32,
            conf_num_attention_heads=4,
            conf_num_hidden_layers=2,
            conf_conv_kernel_size=3,
            conf_attention_chunk_size=4,
            conf_attention_context_left=5,
            sscp_conv_channel_size=(16, 8),
        ),
        # Never built (see services.transcription.gemma); its embedder of image tokens is.
        vision_config=Gemma3nVisionConfig(hidden_size=8, vocab_size=MEDIA_TOKENS, vocab_offset=text_vocab),
        audio_soft_tokens_per_image=AUDIO_SOFT_TOKENS,
        boi_token_id=token("<start_of_image>"),
        eoi_token_id=token("<end_of_image>"),
        image_token_id=token("<image_soft_token>"),
        boa_token_id=token("<start_of_audio>"),
        eoa_token_id=token("<end_of_audio>"),
        audio_token_id=token("<audio_soft_token>"),
    )
    torch.manual_seed(seed)
    model = Gemma3nForAudio(config)
    with torch.no_grad():
        # Random logits are nearly flat and greedy decoding would pick byte tokens on repeat: larger
        # output weights for "▁ + letter" and a repetition penalty make it write short words.
        model.lm_head.weight[token([f"▁{letter}" for letter in string.ascii_lowercase])] *= 10.0
    model.generation_config = GenerationConfig(
        bos_token_id=token("<bos>"),
        eos_token_id=[token("<eos>"), token("<end_of_turn>")],
        pad_token_id=token("<pad>"),
        repetition_penalty=2.0,
    )
    model.save_pretrained(model_dir)
    Gemma3nProcessor(
        feature_extractor=Gemma3nAudioFeatureExtractor(),
        image_processor=SiglipImageProcessorPil(),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
        audio_seq_length=AUDIO_SOFT_TOKENS,
    ).save_pretrained(model_dir)
    return model_dir
