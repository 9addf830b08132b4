"""Tests for the LRA release loaders but Pathfinder's (test_lra_pathfinder.py): each reads tiny
fixtures written here in the release layout.

Expected token ids, labels and pixel values are written out independently of the loaders (the
ListOps vocabulary, byte + 1, TF's grayscale formula on hand-picked colours).
"""

import os
import pickle

import numpy as np
import pytest

from jaxattn.data import load_task

# The documented ListOps vocabulary (shared with the generator): 0 is padding.
LISTOPS_VOCABULARY = ["<pad>", "[MAX", "[MIN", "[MED", "[SM", "]", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]


# ---------------------------------------------------------------------------------------------- ListOps


def to_lra_source(tokens):
    """LRA's serialisation of a prefix expression: each (function, next argument) pair in parentheses."""

    def parse(position):
        token = tokens[position]
        if token.isdigit():
            return token, position + 1
        arguments, position = [], position + 1
        while tokens[position] != "]":
            argument, position = parse(position)
            arguments.append(argument)
        tree = (token, arguments[0])
        for argument in arguments[1:]:
            tree = (tree, argument)
        return (tree, "]"), position + 1

    def render(tree):
        return tree if isinstance(tree, str) else f"( {render(tree[0])} {render(tree[1])} )"

    tree, end = parse(0)
    assert end == len(tokens)
    return render(tree)


LISTOPS_ROWS = {
    "train": [("[MAX 2 9 [MIN 4 7 ] 0 ]", 9), ("[SM 3 4 ]", 7), ("[MED 1 5 3 [SM 9 9 ] ]", 4)],
    "val": [("[MIN 8 [MAX 1 6 ] ]", 6)],
    "test": [("[SM 5 5 ]", 0), ("[MED 2 8 ]", 5)],
}


def write_listops(root, rows=LISTOPS_ROWS):
    folder = root / "listops-1000"
    folder.mkdir(parents=True)
    for split, examples in rows.items():
        lines = ["Source\tTarget"] + [f"{to_lra_source(expression.split())}\t{value}" for expression, value in examples]
        (folder / f"basic_{split}.tsv").write_text("\n".join(lines) + "\n")
    return folder


def test_lra_source_format_matches_the_release():
    assert to_lra_source("[MAX 2 9 ]".split()) == "( ( ( [MAX 2 ) 9 ) ] )"


def test_listops_tokens_labels_lengths(tmp_path):
    write_listops(tmp_path)
    task = load_task("lra_listops", data_dir=tmp_path, max_length=12)
    assert (task.num_classes, task.seq_len, task.vocab_size, task.feature_dim) == (10, 12, 16, None)
    for split, file_split in (("train", "train"), ("validation", "val"), ("test", "test")):
        arrays = task.splits[split]
        examples = LISTOPS_ROWS[file_split]
        assert arrays["inputs"].shape == (len(examples), 12) and arrays["inputs"].dtype == np.int32
        for ids, target, length, (expression, value) in zip(arrays["inputs"], arrays["targets"], arrays["lengths"],
                                                             examples):
            tokens = expression.split()
            assert length == len(tokens) and target == value
            assert [LISTOPS_VOCABULARY[i] for i in ids[:length]] == tokens
            assert not ids[length:].any()


def test_listops_truncates_accepts_the_task_folder_and_uint16(tmp_path):
    folder = write_listops(tmp_path)
    task = load_task("lra_listops", data_dir=folder, max_length=4, input_dtype="uint16")
    arrays = task.splits["train"]
    assert arrays["inputs"].dtype == np.uint16
    np.testing.assert_array_equal(arrays["lengths"], [4, 4, 4])
    assert [LISTOPS_VOCABULARY[i] for i in arrays["inputs"][0]] == ["[MAX", "2", "9", "[MIN"]


def test_listops_same_ids_as_the_generator(tmp_path):
    from jaxattn.data.listops import decode, generate_listops

    generated = generate_listops(3, rng=np.random.default_rng(0), min_length=10, max_length=40, max_depth=4)
    expressions = [decode(ids) for ids in generated["inputs"]]
    rows = {split: [(expression, int(value)) for expression, value in zip(expressions, generated["targets"])]
            for split in ("train", "val", "test")}
    write_listops(tmp_path, rows)
    task = load_task("lra_listops", data_dir=tmp_path, max_length=40)
    np.testing.assert_array_equal(task.splits["test"]["inputs"], generated["inputs"])
    np.testing.assert_array_equal(task.splits["test"]["lengths"], generated["lengths"])


def test_listops_bad_token_and_missing_files(tmp_path):
    folder = write_listops(tmp_path)
    (folder / "basic_val.tsv").write_text("Source\tTarget\n( [MAX 2 ) 9 ]\t9\n( [FIRST 2 ) ]\t2\n")
    with pytest.raises(ValueError, match=r"basic_val.tsv:3.*\[FIRST"):
        load_task("lra_listops", data_dir=tmp_path)
    os.remove(folder / "basic_test.tsv")
    with pytest.raises(FileNotFoundError, match=r"listops-1000/basic_test.tsv.*lra_release"):
        load_task("lra_listops", data_dir=tmp_path)
    with pytest.raises(ValueError, match="data_dir"):
        load_task("lra_listops")


def test_tsv_rows_check_the_header_skip_blank_lines_and_name_the_line(tmp_path):
    from jaxattn.data.lra.common import read_tsv_rows

    def fill_row(row, fields):
        target = int(fields[1])
        row[:len(fields[0])] = np.frombuffer(fields[0], np.uint8)
        return target, len(fields[0])

    path = tmp_path / "rows.tsv"
    path.write_bytes(b"Text\tLabel\r\nab\t1\r\n\nc\t0")  # CRLF, a blank line, no final newline
    rows = read_tsv_rows(str(path), seq_len=3, dtype=np.uint8, fill_row=fill_row, header=b"Text\tLabel")
    np.testing.assert_array_equal(rows["inputs"], [[97, 98, 0], [99, 0, 0]])
    np.testing.assert_array_equal(rows["targets"], [1, 0])
    np.testing.assert_array_equal(rows["lengths"], [2, 1])
    with pytest.raises(ValueError, match=r"rows.tsv: expected the header 'Other'"):
        read_tsv_rows(str(path), seq_len=3, dtype=np.uint8, fill_row=fill_row, header=b"Other")
    with pytest.raises(ValueError, match=r"rows.tsv:1: invalid literal"):  # without a header, line 1 is data
        read_tsv_rows(str(path), seq_len=3, dtype=np.uint8, fill_row=fill_row)


# ---------------------------------------------------------------------------------------------- Text (IMDB)


IMDB_REVIEWS = {  # (split, class folder, file name) -> file bytes
    ("train", "neg", "10_2.txt"): b"Bad.<br /><br />Really.",
    ("train", "neg", "2_1.txt"): b"  Awful film \n",
    ("train", "pos", "0_9.txt"): "Caf\u00e9 scene!".encode(),
    ("train", "pos", "7_8.txt"): b"Great",
    ("test", "neg", "1_3.txt"): b"Meh",
    ("test", "pos", "3_10.txt"): b"Loved it",
}


def write_imdb(root):
    for (split, label, name), data in IMDB_REVIEWS.items():
        folder = root / "aclImdb" / split / label
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    (root / "aclImdb" / "train" / "unsup").mkdir()
    (root / "aclImdb" / "train" / "unsup" / "5_0.txt").write_bytes(b"ignored")


def byte_ids(data: bytes):
    return [byte + 1 for byte in data]


def test_text_bytes_labels_order_and_test_as_validation(tmp_path):
    write_imdb(tmp_path)
    task = load_task("lra_text", data_dir=tmp_path, max_length=16)
    assert (task.num_classes, task.seq_len, task.vocab_size) == (2, 16, 257)
    train = task.splits["train"]
    # neg then pos, by numeric id (2 before 10); surrounding whitespace stripped; truncated to 16 bytes.
    expected = [b"Awful film", b"Bad.<br /><br />Really."[:16], "Caf\u00e9 scene!".encode(), b"Great"]
    np.testing.assert_array_equal(train["targets"], [0, 0, 1, 1])
    np.testing.assert_array_equal(train["lengths"], [len(data) for data in expected])
    for ids, length, data in zip(train["inputs"], train["lengths"], expected):
        assert ids[:length].tolist() == byte_ids(data) and not ids[length:].any()
    assert train["inputs"][2, 3:5].tolist() == [0xC3 + 1, 0xA9 + 1]  # UTF-8 bytes of the e-acute
    assert task.splits["validation"] is task.splits["test"]
    np.testing.assert_array_equal(task.splits["test"]["targets"], [0, 1])


def test_text_seeded_validation_split(tmp_path):
    write_imdb(tmp_path)
    task = load_task("lra_text", data_dir=tmp_path, validation_fraction=0.5, split_seed=1)
    again = load_task("lra_text", data_dir=tmp_path, validation_fraction=0.5, split_seed=1)
    full = load_task("lra_text", data_dir=tmp_path)
    train, validation = task.splits["train"], task.splits["validation"]
    assert len(train["targets"]) == len(validation["targets"]) == 2
    np.testing.assert_array_equal(again.splits["validation"]["inputs"], validation["inputs"])
    rows = {tuple(row) for row in np.concatenate([train["inputs"], validation["inputs"]])}
    assert rows == {tuple(row) for row in full.splits["train"]["inputs"]}
    assert len(task.splits["test"]["targets"]) == 2


def test_text_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"aclImdb/train.*aclImdb_v1.tar.gz"):
        load_task("lra_text", data_dir=tmp_path)


# ---------------------------------------------------------------------------------------------- Retrieval (AAN)


AAN_ROWS = {
    "train": [("1", b"abc", b"xy"), ("0.0", b"hello world", b""), ("1.0", b"q", b"long second text")],
    "eval": [("0", b"v", b"w")],
    "test": [("1", b"t1", b"t2"), ("0", b"a", b"b")],
}


def write_aan(root):
    folder = root / "tsv_data"
    folder.mkdir(parents=True)
    for split, rows in AAN_ROWS.items():
        lines = [b"\t".join([label.encode(), b"id%d" % i, b"other%d" % i, first, second])
                 for i, (label, first, second) in enumerate(rows)]
        (folder / f"new_aan_pairs.{split}.tsv").write_bytes(b"\n".join(lines) + b"\n")
    return folder


def test_retrieval_concat_layout(tmp_path):
    write_aan(tmp_path)
    task = load_task("lra_retrieval", data_dir=tmp_path, max_length=5)
    assert (task.num_classes, task.seq_len, task.vocab_size) == (2, 11, 258)
    train = task.splits["train"]
    np.testing.assert_array_equal(train["targets"], [1, 0, 1])
    for ids, length, (_, first, second) in zip(train["inputs"], train["lengths"], AAN_ROWS["train"]):
        expected = byte_ids(first[:5]) + [257] + byte_ids(second[:5])
        assert length == len(expected) and ids[:length].tolist() == expected and not ids[length:].any()
    assert [len(task.splits[split]["targets"]) for split in ("validation", "test")] == [1, 2]


def test_retrieval_halves_layout(tmp_path):
    write_aan(tmp_path)
    task = load_task("lra_retrieval", data_dir=tmp_path / "tsv_data", max_length=4, layout="halves")
    assert (task.seq_len, task.vocab_size) == (8, 257)
    test = task.splits["test"]
    np.testing.assert_array_equal(test["lengths"], [8, 8])
    assert test["inputs"][0].tolist() == byte_ids(b"t1") + [0, 0] + byte_ids(b"t2") + [0, 0]


def test_retrieval_malformed_row_and_missing_file(tmp_path):
    folder = write_aan(tmp_path)
    (folder / "new_aan_pairs.eval.tsv").write_bytes(b"1\tid\tid\tonly four fields\n")
    with pytest.raises(ValueError, match=r"new_aan_pairs.eval.tsv:1: expected 5"):
        load_task("lra_retrieval", data_dir=tmp_path)
    os.remove(folder / "new_aan_pairs.test.tsv")
    with pytest.raises(FileNotFoundError, match=r"tsv_data/new_aan_pairs.test.tsv"):
        load_task("lra_retrieval", data_dir=tmp_path)


# ---------------------------------------------------------------------------------------------- Image (CIFAR-10)


# (R, G, B) -> gray: floor(255.5 * (0.2989 R + 0.5870 G + 0.1140 B) / 255), worked out by hand.
GRAY_OF = {(255, 255, 255): 255, (255, 0, 0): 76, (0, 255, 0): 149, (0, 0, 255): 29, (100, 50, 200): 82,
           (0, 0, 0): 0}


def cifar_rows(colours_at):
    """uint8 [N, 3072] CIFAR rows: image i is black except {(row, col): (R, G, B)} = colours_at[i]."""
    data = np.zeros((len(colours_at), 3, 32, 32), dtype=np.uint8)
    for image, colours in enumerate(colours_at):
        for (row, col), rgb in colours.items():
            data[image, :, row, col] = rgb
    return data.reshape(len(colours_at), 3072)


def write_cifar(root):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    colours = [{(0, 1): (255, 0, 0), (31, 31): (0, 255, 0)}, {(5, 7): (100, 50, 200), (0, 0): (255, 255, 255)}]
    for index, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        batch = {b"batch_label": name.encode(), b"labels": [index % 10, (index + 3) % 10],
                 b"data": cifar_rows(colours if index != 5 else [{(2, 2): (0, 0, 255)}, {}]),
                 b"filenames": [b"a.png", b"b.png"]}
        with open(folder / name, "wb") as file:
            pickle.dump(batch, file, protocol=2)


def test_image_grayscale_tokens_and_split(tmp_path):
    write_cifar(tmp_path)
    task = load_task("lra_image", data_dir=tmp_path, inputs="tokens", validation_fraction=0.2)
    assert (task.num_classes, task.seq_len, task.vocab_size, task.feature_dim) == (10, 1024, 257, None)
    assert [len(task.splits[split]["targets"]) for split in ("train", "validation", "test")] == [8, 2, 2]
    test = task.splits["test"]
    np.testing.assert_array_equal(test["targets"], [5, 8])
    assert test["inputs"][0, 2 * 32 + 2] == GRAY_OF[(0, 0, 255)] + 1
    assert (np.delete(test["inputs"][0], 2 * 32 + 2) == 1).all() and (test["inputs"][1] == 1).all()
    # Every training batch holds image A (red at (0, 1), green at (31, 31)) with label i and image B
    # (white at (0, 0), (100, 50, 200) at (5, 7)) with label i + 3, for batches i = 0..4.
    rows = np.concatenate([task.splits["train"]["inputs"], task.splits["validation"]["inputs"]])
    labels = np.concatenate([task.splits["train"]["targets"], task.splits["validation"]["targets"]])
    expected_a = np.ones(1024, np.int32)
    expected_a[[1, 1023]] = GRAY_OF[(255, 0, 0)] + 1, GRAY_OF[(0, 255, 0)] + 1
    expected_b = np.ones(1024, np.int32)
    expected_b[[0, 5 * 32 + 7]] = GRAY_OF[(255, 255, 255)] + 1, GRAY_OF[(100, 50, 200)] + 1
    is_a = (rows == expected_a).all(axis=1)
    is_b = (rows == expected_b).all(axis=1)
    assert is_a.sum() == 5 and is_b.sum() == 5
    assert sorted(labels[is_a].tolist()) == [0, 1, 2, 3, 4] and sorted(labels[is_b].tolist()) == [3, 4, 5, 6, 7]
    assert task.splits["train"]["lengths"].tolist() == [1024] * 8


def test_image_features_and_test_as_validation(tmp_path):
    write_cifar(tmp_path)
    task = load_task("lra_image", data_dir=tmp_path / "cifar-10-batches-py", validation_fraction=0.0,
                     input_dtype="float16")
    assert (task.vocab_size, task.feature_dim) == (None, 1)
    inputs = task.splits["test"]["inputs"]
    assert inputs.shape == (2, 1024, 1) and inputs.dtype == np.float16
    np.testing.assert_allclose(inputs[0, 2 * 32 + 2, 0], (29 - 122.6) / 61.0, rtol=1e-3)
    np.testing.assert_allclose(inputs[1, 0, 0], -122.6 / 61.0, rtol=1e-3)
    assert task.splits["validation"]["inputs"] is inputs
    assert len(task.splits["train"]["targets"]) == 10


def test_image_missing_batch(tmp_path):
    write_cifar(tmp_path)
    os.remove(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py/data_batch_3.*cifar-10-python.tar.gz"):
        load_task("lra_image", data_dir=tmp_path)
