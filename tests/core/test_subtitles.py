from mediaflow.models import Segment, Transcript
from mediaflow.subtitles import mmss, parse_cues, to_srt, to_txt, to_vtt

TRANSCRIPT = Transcript(
    language="en",
    duration=3725.5,
    segments=[
        Segment(start=0.5, end=2.25, text="Hello there."),
        Segment(start=61.001, end=65.999, text="Second, with a comma."),
        Segment(start=3600.0, end=3725.5, text="An hour in."),
    ],
)


def test_srt_and_vtt_parse_back_to_the_same_segments():
    for rendered in (to_srt(TRANSCRIPT), to_vtt(TRANSCRIPT)):
        parsed = parse_cues(rendered)
        assert [(s.start, s.end, s.text) for s in parsed] == [
            (s.start, s.end, s.text) for s in TRANSCRIPT.segments
        ]


def test_formats_follow_their_specs():
    srt = to_srt(TRANSCRIPT)
    assert srt.startswith("1\n00:00:00,500 --> 00:00:02,250\nHello there.\n")
    vtt = to_vtt(TRANSCRIPT)
    assert vtt.startswith("WEBVTT\n\n00:00:00.500 --> 00:00:02.250\n")
    assert "01:00:00.000 --> 01:02:05.500" in vtt
    assert to_txt(TRANSCRIPT).splitlines() == ["Hello there.", "Second, with a comma.", "An hour in."]


def test_clock_for_citations():
    assert mmss(0) == "00:00"
    assert mmss(61.9) == "01:01"
    assert mmss(3725) == "1:02:05"
