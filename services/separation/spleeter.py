"""Spleeter 2-stem separation (Deezer, MIT): our PyTorch port of its U-Net, loading safetensors
weights (one file per source, as in ../shared/models/spleeter-2stems; its README has the facts).

Each source's net maps a stereo magnitude spectrogram to a soft mask times that spectrogram; the
sources' outputs become ratio masks applied to the complex STFT of the mixture.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from roar.errors import ModelUnavailable
from roar.progress import stop_on_cancel
from services.separation.separator import MixLevel, beat_on_every_layer

log = logging.getLogger("roar.separation")

SOURCES = ["vocals", "accompaniment"]
N_FFT = 4096
HOP = 1024
BINS = 1024  # the nets see the first 1024 of the 2049 bins (up to ~11 kHz); the rest are zeroed
SEGMENT_FRAMES = 512
# One window is one U-Net segment: 512 STFT frames (11.9 s), of which a quarter overlaps the next
# window; the rest (8.9 s, 3.1 MB of stereo float32) is one StemWindow per stem.
WINDOW_FRAMES = (SEGMENT_FRAMES - 1) * HOP
EPSILON = 1e-10
ENCODER_CHANNELS = [16, 32, 64, 128, 256, 512]
SOURCE_HINT = (
    "a Spleeter model's source is a directory holding vocals.safetensors and accompaniment.safetensors"
)


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    # Keras' BatchNormalization epsilon.
    return nn.BatchNorm2d(channels, eps=1e-3)


class UNet(nn.Module):
    """One source's net: (batch, 2, frames, bins) magnitudes -> the same shape, masked.

    Module names mirror the weight keys (`downN_conv.1`, `downN_act.0`, `upN.0`, `upN.3`, `up7.0`).
    Paddings and crops reproduce TensorFlow's 'same' convolutions of the original.
    """

    def __init__(self) -> None:
        super().__init__()
        in_channels = 2
        for level, out_channels in enumerate(ENCODER_CHANNELS, start=1):
            conv = nn.Sequential(
                nn.ZeroPad2d((1, 2, 1, 2)), nn.Conv2d(in_channels, out_channels, 5, stride=2)
            )
            act = nn.Sequential(_batch_norm(out_channels), nn.LeakyReLU(0.2))
            self.add_module(f"down{level}_conv", conv)
            # down6_act is never used (up1 reads the raw down6 conv) but is kept to load the weights strictly.
            self.add_module(f"down{level}_act", act)
            in_channels = out_channels
        decoder_channels = [*reversed(ENCODER_CHANNELS[:-1]), 1]  # 256, 128, 64, 32, 16, 1
        for level, out_channels in enumerate(decoder_channels, start=1):
            # up1 reads the deepest encoder output; the others its skip concatenated with the
            # previous decoder output, which doubles their input channels.
            in_channels = ENCODER_CHANNELS[-1] if level == 1 else 2 * decoder_channels[level - 2]
            layers = [
                nn.ConvTranspose2d(in_channels, out_channels, 5, stride=2),
                nn.ZeroPad2d((-1, -2, -1, -2)),
                nn.ReLU(),
                _batch_norm(out_channels),
            ]
            if level <= 3:
                layers.append(nn.Dropout(0.5))
            self.add_module(f"up{level}", nn.Sequential(*layers))
        self.up7 = nn.Sequential(nn.Conv2d(1, 2, 4, dilation=2, padding=3), nn.Sigmoid())

    def forward(self, magnitude: torch.Tensor) -> torch.Tensor:
        skips = []  # each encoder conv's output before its BatchNorm
        x = magnitude
        for level in range(1, len(ENCODER_CHANNELS)):
            conv = getattr(self, f"down{level}_conv")(x)
            skips.append(conv)
            x = getattr(self, f"down{level}_act")(conv)
        x = self.up1(self.down6_conv(x))
        for level, skip in zip(range(2, 7), reversed(skips), strict=True):
            x = getattr(self, f"up{level}")(torch.cat([skip, x], dim=1))
        return self.up7(x) * magnitude


def _load_unet(path: Path, device: str) -> UNet:
    unet = UNet()
    try:
        unet.load_state_dict(load_file(path), strict=True)
    except (OSError, SafetensorError, RuntimeError) as exc:
        # The library's message names the file's path: it goes to the log only.
        log.error("cannot load Spleeter weights %s: %s", path, exc)
        raise ModelUnavailable(f"its Spleeter weights {path.name} do not load; {SOURCE_HINT}") from exc
    return beat_on_every_layer(stop_on_cancel(unet.to(device).eval()))


class SpleeterSeparator:
    """Spleeter 2stems: stereo 44.1 kHz audio -> vocals and accompaniment."""

    name = "spleeter-2stems"
    sample_rate = 44100
    channels = 2
    sources = SOURCES
    window_frames = WINDOW_FRAMES

    def __init__(self, model_dir: Path, device: str = "cpu") -> None:
        model_dir = Path(model_dir)
        missing = [f"{s}.safetensors" for s in SOURCES if not (model_dir / f"{s}.safetensors").is_file()]
        if missing:
            raise ModelUnavailable(f"its Spleeter model dir lacks {' and '.join(missing)}; {SOURCE_HINT}")
        self.device = device
        self.nets = {source: _load_unet(model_dir / f"{source}.safetensors", device) for source in SOURCES}
        self._window = torch.hann_window(N_FFT, device=device)

    def separate_window(self, audio: torch.Tensor, start: int, frames: int, level: MixLevel) -> torch.Tensor:
        """Spleeter masks a whole stretch at once: it reads no context, and needs no level (ratio masks)."""
        if audio.ndim != 2 or audio.shape[0] != self.channels or frames <= 0:
            raise ValueError(
                f"Spleeter needs stereo (2, frames) audio with frames > 0, got {tuple(audio.shape)}"
            )
        with torch.inference_mode():
            waveform = audio[:, start : start + frames].to(self.device, torch.float32)
            # "Centred, zero padding": n_fft/2 zeros each side, not torch's default reflection.
            stft = torch.stft(
                waveform,
                N_FFT,
                HOP,
                window=self._window,
                center=True,
                pad_mode="constant",
                return_complex=True,
            )
            stft_frames = stft.shape[-1]
            # (2, bins, frames) -> (segments, 2, 512 frames, 1024 bins), the last segment zero-padded.
            magnitude = stft[:, :BINS].abs().transpose(1, 2)
            segment_count = -(-stft_frames // SEGMENT_FRAMES)
            magnitude = nn.functional.pad(magnitude, (0, 0, 0, segment_count * SEGMENT_FRAMES - stft_frames))
            segments = magnitude.reshape(2, segment_count, SEGMENT_FRAMES, BINS).transpose(0, 1)
            estimates: dict[str, list[torch.Tensor]] = {source: [] for source in SOURCES}
            for index in range(segment_count):
                segment = segments[index : index + 1]
                for source, net in self.nets.items():
                    estimates[source].append(net(segment))
            # Back to (2, bins, frames) per source, without the padding frames.
            powers = {
                source: torch.cat(parts).transpose(0, 1).reshape(2, -1, BINS)[:, :stft_frames].transpose(1, 2)
                ** 2
                for source, parts in estimates.items()
            }
            total = sum(powers.values()) + EPSILON
            separated = []
            for power in powers.values():
                masked = torch.zeros_like(stft)
                masked[:, :BINS] = stft[:, :BINS] * (power / total)
                separated.append(
                    torch.istft(masked, N_FFT, HOP, window=self._window, center=True, length=frames)
                )
        return torch.stack(separated).cpu()
