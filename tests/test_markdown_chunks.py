from bot.delivery.markdown import CURSOR, open_fence, plain_fallback, split_markdown, streaming_view


def test_streaming_view_closes_an_open_fence_after_the_cursor():
    view = streaming_view("Here:\n```python\nprint('hi')")
    assert view == f"Here:\n```python\nprint('hi'){CURSOR}\n```"
    assert open_fence(view) is None


def test_streaming_view_of_balanced_text_only_adds_the_cursor():
    assert streaming_view("Done.\n```\nx\n```\n") == f"Done.\n```\nx\n```\n{CURSOR}"


def test_a_fence_closes_only_with_the_same_marker():
    assert open_fence("~~~\ncode\n```") is not None
    assert open_fence("````\ncode\n```") is not None
    assert open_fence("````\ncode\n`````") is None


def test_short_text_is_one_message():
    assert split_markdown("hello", limit=100) == ["hello"]


def test_split_prefers_paragraph_boundaries():
    first = "a" * 60
    second = "b " * 30
    pieces = split_markdown(f"{first}\n\n{second}", limit=100)
    assert pieces == [first, second]


def test_split_prefers_a_line_when_no_paragraph_fits():
    text = "\n".join([f"line {i:02d} words here" for i in range(12)])
    pieces = split_markdown(text, limit=120)
    assert all(len(piece) <= 120 for piece in pieces)
    assert "\n".join(pieces) == text


def test_split_never_leaves_a_code_block_open_and_reopens_it_with_its_language():
    code = "\n".join(f"x_{i} = {i}" for i in range(40))
    text = f"Intro.\n\n```python\n{code}\n```\nAfter."
    pieces = split_markdown(text, limit=150)
    assert len(pieces) > 2
    for piece in pieces:
        assert len(piece) <= 150
        assert open_fence(piece) is None, piece
    assert all(piece.startswith("```python\n") for piece in pieces[1:-1])
    rejoined = "".join(pieces)
    for i in range(40):
        assert f"x_{i} = {i}" in rejoined


def test_split_moves_a_whole_code_block_to_the_next_message_rather_than_cutting_it():
    code_block = "```sh\n" + "\n".join(f"echo {i}" for i in range(8)) + "\n```"
    text = "p" * 50 + "\n\n" + code_block
    pieces = split_markdown(text, limit=len(code_block) + 20)
    assert pieces == ["p" * 50, code_block]


def test_split_falls_back_to_words_then_characters():
    words = " ".join(["word"] * 60)
    pieces = split_markdown(words, limit=100)
    assert all(len(piece) <= 100 for piece in pieces)
    assert " ".join(pieces).split() == words.split()
    blob = "x" * 250
    pieces = split_markdown(blob, limit=100)
    assert "".join(pieces) == blob and all(len(piece) <= 100 for piece in pieces)


def test_split_of_a_growing_text_keeps_its_first_message_stable():
    text = "\n\n".join(f"Paragraph {i} " + "w " * 20 for i in range(30))
    first_cut = split_markdown(text[:700], limit=400)[0]
    for end in range(700, len(text), 37):
        assert split_markdown(text[:end], limit=400)[0] == first_cut


def test_plain_fallback_is_bounded():
    assert plain_fallback("short") == "short"
    assert len(plain_fallback("y" * 5000)) == 3000
