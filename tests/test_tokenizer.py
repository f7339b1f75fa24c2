import random

from transformers import AutoTokenizer

from ponder.defaults import DEFAULT_POLICY, DEFAULT_PRM
from tasks.countdown import generate, reference_solution, solution_text
from training.tokenizer import BAD, GOOD, STEP_TAG, build_tokenizer


def test_numbers_up_to_three_digits_are_one_token() -> None:
    tokenizer = build_tokenizer()
    assert tokenizer.tokenize("13-7=6 [3 9 6]\n") == [
        "13",
        "-",
        "7",
        "=",
        "6",
        " ",
        "[",
        "3",
        " ",
        "9",
        " ",
        "6",
        "]",
        "\n",
    ]
    assert tokenizer.tokenize("999") == ["999"]
    assert tokenizer.tokenize("1234") == ["123", "4"]


def test_round_trip_is_lossless_for_countdown_text_and_digits() -> None:
    tokenizer = build_tokenizer()
    rng = random.Random(0)
    for problem in generate(5, 20, 3):
        text = problem.prompt() + solution_text(reference_solution(problem, rng))
        assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    for text in ["100004 0007 00", "a long sentence, with punctuation!?", "\t tabs\n"]:
        assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_unknown_characters_become_unk_not_errors() -> None:
    tokenizer = build_tokenizer()
    ids = tokenizer.encode("é漢", add_special_tokens=False)
    assert ids == [tokenizer.unk_token_id] * 2


def test_prm_special_tokens_are_single_tokens() -> None:
    tokenizer = build_tokenizer()
    for token in (STEP_TAG, GOOD, BAD):
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1 and ids[0] != tokenizer.unk_token_id


def test_chat_template_renders_the_training_prompt() -> None:
    tokenizer = build_tokenizer()
    text = tokenizer.apply_chat_template([{"role": "user", "content": " 3 7 9 13 -> 24 "}], tokenize=False)
    assert text == "<s>3 7 9 13 -> 24\n"


def test_shipped_checkpoints_carry_the_same_tokenizer() -> None:
    reference = build_tokenizer()
    for path in (DEFAULT_POLICY, DEFAULT_PRM):
        loaded = AutoTokenizer.from_pretrained(str(path))
        assert loaded.get_vocab() == reference.get_vocab()
        assert loaded.chat_template == reference.chat_template
