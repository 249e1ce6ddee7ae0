"""The lyrics aligner alone, for tuning it: every song's exact and wrong lyrics aligned against its
separated vocals, anchored by what the model heard, and scored as bench.eval scores the pipeline.
The separated vocals and the transcript are made once per song and kept in a cache dir, so a change
to services/transcription/align.py is measured on a set in about a minute (bench.eval runs
every stage through the services: minutes). Tune on the dev, val and female sets
(bench/README.md); the test set is for bench.eval's report only.

    python -m bench.align_sets bench/data/dev bench/data/val bench/data/female

With --joined, the songs of all the sets are aligned once more end to end, as one long input with
all their lyrics, and the aligner's CPU time is printed against the input's duration.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from bench.eval import SHARED_MODELS, Song, load_song, mean_and_worst, score_condition, song_dirs
from bench.transcription_cost import separated_vocals
from roar.progress import no_progress
from roar.v1 import common_pb2, transcription_pb2
from services.karaoke.formats import lines_json, words_json
from services.transcription.align import Judge, transcript_from_lyrics
from services.transcription.transcribe import transcribe_song
from services.transcription.transcriber import Transcriber, load_transcriber, prepare_audio
from services.transcription.vad import SAMPLE_RATE

# What is printed per condition, as "name: format": the share of sung words within the target's
# tolerance, and the sung lines lost (exact lyrics) or the unsung line reported (wrong lyrics).
COLUMNS = {
    "exact": {"within_0_2": "within 0.2 s {:.1%}", "falsely_unsung": "lines lost {:.0f}"},
    "wrong": {"within_0_3": "within 0.3 s {:.1%}", "unsung_reported": "unsung reported {:.0%}"},
}


@functools.cache
def _transcriber(source: str) -> Transcriber:
    return load_transcriber(source, "cpu")


def cached(
    song: Song, cache: Path, separation_model: Path, transcription_model: str
) -> tuple[np.ndarray, common_pb2.Transcript]:
    """(vocals, transcript): the song's Spleeter vocals as the transcription service reads them
    (mono 16 kHz, brought to one level) and what the model heard in them without lyrics."""
    vocals_path = cache / f"{song.mixture_path.parent.parent.name}_{song.name}.wav"
    transcript_path = vocals_path.with_suffix(".transcript.pb")
    if not vocals_path.is_file():
        vocals_path.write_bytes(separated_vocals(song.mixture_path, separation_model))
    vocals = prepare_audio(vocals_path.read_bytes())
    if not transcript_path.is_file():
        step = 10 * SAMPLE_RATE
        blocks = (vocals[i : i + step] for i in range(0, len(vocals), step))
        options = transcription_pb2.TranscriptionOptions(language="en")
        transcriber = _transcriber(transcription_model)
        transcript = transcribe_song(blocks, options, lambda _: transcriber, no_progress)
        transcript_path.write_bytes(transcript.SerializeToString())
    return vocals, common_pb2.Transcript.FromString(transcript_path.read_bytes())


def judged_by(transcriber: Transcriber) -> Judge:
    """The aligner's judge, as the service makes it from its model."""
    return lambda samples, texts: transcriber.text_logprobs(samples, texts, "en")


def score_song(song: Song, vocals: np.ndarray, heard: common_pb2.Transcript, judge: Judge) -> dict[str, dict]:
    """Per lyrics condition the song has, bench.eval's scores of the aligner's output."""
    scores = {}
    for condition in COLUMNS:
        if condition not in song.lyrics:
            continue
        lyrics = song.lyrics[condition]
        lines = transcript_from_lyrics(vocals, lyrics, "en", lambda _: heard, judge=judge).segments
        words = json.loads(words_json(lines))
        scores[condition] = score_condition(song.truth, words, json.loads(lines_json(lines)), condition)
    return scores


def joined_cost(songs: Sequence[tuple[str, np.ndarray, common_pb2.Transcript]], judge: Judge) -> str:
    """The aligner's CPU time on songs (lyrics, vocals, heard words) end to end, as one input."""
    words, offset = [], 0.0
    for _, vocals, heard in songs:
        for word in (w for segment in heard.segments for w in segment.words):
            words.append(common_pb2.Word())
            words[-1].CopyFrom(word)
            words[-1].start, words[-1].end = word.start + offset, word.end + offset
        offset += len(vocals) / SAMPLE_RATE
    audio = np.concatenate([vocals for _, vocals, _ in songs])
    transcript = common_pb2.Transcript(segments=[common_pb2.Segment(words=words)])
    lyrics = "\n\n".join(lyrics for lyrics, _, _ in songs)
    started = time.process_time()
    lines = transcript_from_lyrics(audio, lyrics, "en", lambda _: transcript, judge=judge).segments
    seconds = time.process_time() - started
    return (
        f"joined: {offset:.0f} s of audio, {len(lines)} lines, "
        f"aligned in {seconds:.0f} s of CPU ({seconds / offset:.3f} x its duration)"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sets", nargs="+", type=Path, help="dirs of bench.synth songs")
    parser.add_argument("--cache", type=Path, default=Path("bench/data/.align_cache"))
    parser.add_argument("--separation-model", type=Path, default=SHARED_MODELS / "spleeter-2stems")
    parser.add_argument("--transcription-model", default=str(SHARED_MODELS / "whisper-tiny.en"))
    parser.add_argument("--joined", action="store_true", help="also align all the songs as one input")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.cache.mkdir(parents=True, exist_ok=True)
    everything = []  # (exact lyrics, vocals, heard words) of every song, for --joined
    judge = judged_by(_transcriber(args.transcription_model))
    for dataset in args.sets:
        rows = {}
        for song_dir in song_dirs(dataset):
            song = load_song(song_dir)
            vocals, heard = cached(song, args.cache, args.separation_model, args.transcription_model)
            rows[song_dir.name] = score_song(song, vocals, heard, judge)
            everything.append((song.lyrics["exact"], vocals, heard))
            cells = [
                f"{condition}: "
                + ", ".join(form.format(scores[key]) for key, form in COLUMNS[condition].items())
                for condition, scores in rows[song_dir.name].items()
            ]
            print(f"{dataset.name}/{song_dir.name}: " + "; ".join(cells), flush=True)
        for condition, columns in COLUMNS.items():
            for key in columns:
                values = {name: row[condition][key] for name, row in rows.items() if condition in row}
                summary = mean_and_worst(values, key)
                if not math.isnan(summary["mean"]):
                    print(
                        f"{dataset.name} {condition} {key}: mean {summary['mean']:.3f}, "
                        f"worst {summary['worst']:.3f} ({summary['worst_song']})"
                    )
    if args.joined:
        print(joined_cost(everything, judge))


if __name__ == "__main__":
    main()
