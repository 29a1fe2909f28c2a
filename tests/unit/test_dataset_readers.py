"""Each official on-disk layout, as a tiny fixture tree: splits, counts, labels, and the missing-file errors."""

import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pml_vmf.data import DatasetNotFoundError, ImageDataset, load_protocol, read_fashion_mnist
from pml_vmf.data.protocols import PROTOCOL_COUNTS


def _image(path: Path, mode: str = "RGB") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (6, 6), 128 if mode == "L" else (10, 200, 30)).save(path)
    return path


def _load(dataset: str, root: Path, **kwargs):
    kwargs.setdefault("check_protocol", False)
    kwargs.setdefault("val_fraction", 0.0)
    return load_protocol(dataset, str(root), **kwargs)


def _cub(root: Path) -> None:
    lines, labels = [], []
    for n, label in enumerate([1, 1, 100, 101, 150, 200], start=1):
        rel = f"{label:03d}.Bird/img_{n}.jpg"
        _image(root / "images" / rel)
        lines.append(f"{n} {rel}")
        labels.append(f"{n} {label}")
    (root / "images.txt").write_text("\n".join(lines) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")


def test_cub200_trains_on_classes_1_to_100_and_tests_on_101_to_200(tmp_path):
    _cub(tmp_path)
    splits = _load("cub200", tmp_path)
    assert len(splits.train) == 3 and len(splits.query) == 3 and splits.reference is None
    assert splits.train.labels.tolist() == [0, 0, 1] and splits.query.labels.tolist() == [0, 1, 2]
    assert all(Path(p).is_file() for p in splits.train.images)


def test_cars196_reads_cars_annos_mat(tmp_path):
    from scipy.io import savemat

    rows = [
        ("car_ims/000001.jpg", 1, 0),
        ("car_ims/000002.jpg", 98, 1),
        ("car_ims/000003.jpg", 99, 1),
        ("car_ims/000004.jpg", 196, 0),
    ]
    annotations = np.array(
        [(path, 0, 0, 5, 5, label, test) for path, label, test in rows],
        dtype=[
            ("relative_im_path", "O"),
            ("bbox_x1", "O"),
            ("bbox_y1", "O"),
            ("bbox_x2", "O"),
            ("bbox_y2", "O"),
            ("class", "O"),
            ("test", "O"),
        ],
    )
    savemat(tmp_path / "cars_annos.mat", {"annotations": annotations.reshape(1, -1)})
    for path, _, _ in rows:
        _image(tmp_path / path)
    splits = _load("cars196", tmp_path)
    assert [Path(p).name for p in splits.train.images] == ["000001.jpg", "000002.jpg"]
    assert [Path(p).name for p in splits.query.images] == ["000003.jpg", "000004.jpg"]


def test_sop_reads_the_ebay_lists_by_product(tmp_path):
    header = "image_id class_id super_class_id path\n"
    (tmp_path / "Ebay_train.txt").write_text(
        header + "1 1 1 bicycle_final/a.JPG\n2 1 1 bicycle_final/b.JPG\n3 7 2 cabinet_final/c.JPG\n"
    )
    (tmp_path / "Ebay_test.txt").write_text(header + "4 11319 1 bicycle_final/d.JPG\n5 11320 1 bicycle_final/e.JPG\n")
    splits = _load("sop", tmp_path)
    assert splits.train.labels.tolist() == [0, 0, 1] and splits.query.labels.tolist() == [0, 1]
    assert Path(splits.query.images[0]) == tmp_path / "bicycle_final" / "d.JPG"


def test_inshop_searches_queries_in_the_gallery_with_shared_item_labels(tmp_path):
    (tmp_path / "Eval").mkdir()
    rows = [
        ("img/WOMEN/Dresses/id_00000002/01_1_front.jpg", "id_00000002", "train"),
        ("img/WOMEN/Dresses/id_00000007/01_1_front.jpg", "id_00000007", "train"),
        ("img/MEN/Denim/id_00000080/01_1_front.jpg", "id_00000080", "query"),
        ("img/MEN/Denim/id_00000080/01_2_side.jpg", "id_00000080", "gallery"),
        ("img/MEN/Denim/id_00000090/01_1_front.jpg", "id_00000090", "gallery"),
    ]
    lines = [str(len(rows)), "image_name item_id evaluation_status"] + [" ".join(r) for r in rows]
    (tmp_path / "Eval" / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    splits = _load("inshop", tmp_path)
    assert len(splits.train) == 2 and len(splits.query) == 1 and len(splits.reference) == 2
    assert splits.query.labels.tolist() == [0] and splits.reference.labels.tolist() == [0, 1]


def test_image_folder_with_one_tree_splits_the_sorted_classes_in_half(tmp_path):
    for name in ("ant", "bee", "cat", "dog", "eel"):
        for n in range(2):
            _image(tmp_path / name / f"{n}.png")
    splits = _load("image_folder", tmp_path)
    assert {Path(p).parent.name for p in splits.train.images} == {"ant", "bee", "cat"}
    assert {Path(p).parent.name for p in splits.query.images} == {"dog", "eel"}
    assert splits.train.labels.tolist() == [0, 0, 1, 1, 2, 2] and splits.query.labels.tolist() == [0, 0, 1, 1]


def test_image_folder_train_and_test_trees_closed_set_keeps_class_labels(tmp_path):
    for split in ("train", "test"):
        for name in ("ant", "bee"):
            for n in range(4):
                _image(tmp_path / split / name / f"{n}.png")
    splits = _load("image_folder", tmp_path, protocol="closed_set", val_fraction=0.25)
    assert splits.test_classes_are_train_classes
    assert sorted(set(splits.query.labels.tolist())) == [0, 1] and len(splits.train) == 6 and len(splits.val) == 2
    assert sorted(set(splits.val.labels.tolist())) == [0, 1]  # images of every class held out, not whole classes
    # ... labelled as in training, so that a classifier can be scored on them (eval.select_by=classifier_accuracy)
    assert splits.val_classes_are_train_classes
    label_of = {Path(p).parent.name: label for p, label in zip(splits.train.images, splits.train.labels.tolist())}
    assert all(
        label_of[Path(p).parent.name] == label for p, label in zip(splits.val.images, splits.val.labels.tolist())
    )
    assert not _load(
        "image_folder", tmp_path, protocol="class_disjoint", val_fraction=0.25, val_by="images"
    ).val_classes_are_train_classes


def test_grayscale_and_rgba_images_load_as_rgb_with_transparency_on_white(tmp_path):
    for name, mode in (("gray", "L"), ("alpha", "RGBA")):
        _image(tmp_path / "x" / f"{name}.png", mode)
    Image.new("RGBA", (6, 6), (0, 0, 0, 0)).save(tmp_path / "x" / "alpha.png")
    for name in ("a", "b"):
        _image(tmp_path / "y" / f"{name}.png")
    splits = _load("image_folder", tmp_path)
    images = [ImageDataset(splits.train)[i][0] for i in range(len(splits.train))]
    assert all(image.mode == "RGB" for image in images)
    assert images[0].getpixel((0, 0)) == (255, 255, 255)  # alpha.png: fully transparent black becomes white


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_local_idx_files_and_splits_by_protocol(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 20)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    raw = read_fashion_mnist(tmp_path, download=False)
    assert raw["train"].images.shape == (40, 28, 28) and raw["test"].labels.tolist()[:3] == [0, 1, 2]
    disjoint = _load("fashion_mnist", tmp_path)
    assert len(disjoint.train) == 20 and len(disjoint.query) == 10  # classes 0-4 of train, 5-9 of t10k
    closed = _load("fashion_mnist", tmp_path, protocol="closed_set")
    assert len(closed.train) == 40 and len(closed.query) == 20 and closed.test_classes_are_train_classes


def test_fashion_mnist_without_files_or_download_says_how_to_get_them(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        read_fashion_mnist(tmp_path, download=False)


@pytest.mark.parametrize(
    "dataset, expected",
    [("cub200", "images.txt not found"), ("cars196", "cars_annos.mat not found"), ("sop", "Ebay_train.txt not found"),
     ("inshop", "list_eval_partition.txt or Eval/list_eval_partition.txt not found")],
)  # fmt: skip
def test_a_missing_annotation_file_is_named_with_the_dataset_source(dataset, expected, tmp_path):
    with pytest.raises(DatasetNotFoundError, match=expected) as error:
        _load(dataset, tmp_path)
    assert "It comes from http" in str(error.value)


def test_a_missing_dataset_folder_says_how_to_pass_one(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="--data-root"):
        _load("cub200", tmp_path / "absent")
    with pytest.raises(ValueError, match="needs its folder"):
        load_protocol("sop", None)


def test_protocol_counts_are_checked_at_load(tmp_path):
    _cub(tmp_path)
    with pytest.raises(ValueError, match="the protocol has 5864 of 100"):
        _load("cub200", tmp_path, check_protocol=True)
    assert PROTOCOL_COUNTS["sop"]["query"] == (60502, 11316)


def test_validation_holds_out_whole_training_classes_by_default(tmp_path):
    for c in range(20):
        for n in range(2):
            _image(tmp_path / f"c{c:02d}" / f"{n}.png")
    splits = _load("image_folder", tmp_path, val_fraction=0.2)
    assert splits.train.num_classes == 8 and splits.val.num_classes == 2 and len(splits.query) == 20
    train_dirs = {Path(p).parent.name for p in splits.train.images}
    assert not train_dirs & {Path(p).parent.name for p in splits.val.images}
    assert splits.train.labels.max() == 7 and splits.val.labels.max() == 1  # both remapped to 0..C-1


def test_closed_set_matches_test_classes_to_training_classes_by_name(tmp_path):
    """train/ has bee, cat; test/ has ant, bee. Compared by id after remapping, test's ant (0) and bee (1) looked like
    train's bee (0) and cat (1), so the check passed and test images were scored against the wrong means."""
    for split, names in (("train", ("bee", "cat")), ("test", ("ant", "bee"))):
        for name in names:
            for n in range(2):
                _image(tmp_path / split / name / f"{n}.png")
    with pytest.raises(ValueError, match=r"1 class\(es\) the training images do not: 'ant'"):
        _load("image_folder", tmp_path, protocol="closed_set")


def test_closed_set_test_labels_follow_the_training_class_names(tmp_path):
    for split, names in (("train", ("ant", "bee", "cat")), ("test", ("bee", "cat"))):
        for name in names:
            for n in range(2):
                _image(tmp_path / split / name / f"{n}.png")
    splits = _load("image_folder", tmp_path, protocol="closed_set")
    assert splits.train.class_names == splits.query.class_names == ["ant", "bee", "cat"]
    for path, label in zip(splits.query.images, splits.query.labels):
        assert splits.train.class_names[label] == Path(path).parent.name


def test_image_folder_from_the_wild_skips_what_it_cannot_use_and_names_it(tmp_path):
    for n in range(3):
        _image(tmp_path / "ant" / f"{n}.png")
    _image(tmp_path / "ant" / "more" / "deeper" / "nested.png")  # nested folders are part of their class
    _image(tmp_path / "bee" / "UPPER.PNG")  # upper-case extension; bee then has a single image
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    (tmp_path / "ant" / ".DS_Store").write_bytes(b"\0\1\2")
    (tmp_path / "ant" / "corrupt.jpg").write_bytes(b"this is not a jpeg at all")
    truncated = tmp_path / "ant" / "truncated.png"
    _image(truncated)
    truncated.write_bytes(truncated.read_bytes()[:40])
    (tmp_path / "cat").mkdir()  # an empty class folder
    (tmp_path / "loose.png").write_bytes(b"")  # outside any class folder
    from pml_vmf.data.image_folder import read_class_tree

    with pytest.warns(UserWarning) as caught:
        images, names = read_class_tree(tmp_path)
    messages = "\n".join(str(w.message) for w in caught)
    for expected in (
        "notes.txt",
        ".DS_Store",
        "corrupt.jpg",
        "truncated.png",
        f"{tmp_path / 'cat'}",
        "loose.png",
        "single image (bee)",
    ):
        assert expected in messages, expected
    assert sorted(Path(p).name for p in images.images) == ["0.png", "1.png", "2.png", "UPPER.PNG", "nested.png"]
    assert names == ["ant", "bee", "cat"] and sorted(images.labels.tolist()) == [0, 0, 0, 0, 1]


def test_an_image_damaged_past_its_header_is_named_when_loaded_even_in_a_worker(tmp_path):
    import torch

    from pml_vmf.data import LabelledImages, UnreadableImageError

    path = tmp_path / "ant" / "cut.jpg"
    path.parent.mkdir()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(path, quality=95)
    path.write_bytes(path.read_bytes()[:-300])  # a truncated download: the header is intact
    dataset = ImageDataset(LabelledImages([path], np.array([0])))
    with pytest.raises(UnreadableImageError, match="cut.jpg"):
        dataset[0]
    loader = torch.utils.data.DataLoader(dataset, num_workers=1)
    with pytest.raises(UnreadableImageError, match="cut.jpg"):
        next(iter(loader))


def test_an_image_folder_with_nothing_readable_is_an_error(tmp_path):
    (tmp_path / "ant").mkdir()
    (tmp_path / "ant" / "a.txt").write_text("x")
    with pytest.warns(UserWarning), pytest.raises(DatasetNotFoundError, match="No readable images"):
        _load("image_folder", tmp_path)


@pytest.mark.parametrize("kind", ["png16", "tiff_float", "tiff_int32"])
def test_deep_images_are_scaled_to_8_bits_not_clipped(tmp_path, kind):
    """A 16-bit PNG, a float TIFF and a 32-bit integer TIFF of a full ramp keep all 256 grey levels, in order."""
    import numpy as np
    from PIL import Image

    from pml_vmf.data.image_dataset import rgb_on_white

    ramp = np.linspace(0, 1, 64 * 64).reshape(64, 64)
    path = tmp_path / ("ramp.png" if kind == "png16" else "ramp.tif")
    if kind == "png16":
        Image.fromarray((ramp * 65535).astype(np.uint16)).save(path)
    elif kind == "tiff_float":
        Image.fromarray(ramp.astype(np.float32), mode="F").save(path)
    else:
        Image.fromarray((ramp * (2**31 - 1)).astype(np.int32), mode="I").save(path)
    with Image.open(path) as image:
        out = np.asarray(rgb_on_white(image))
    assert out.shape == (64, 64, 3) and out.min() == 0 and out.max() == 255
    assert len(np.unique(out)) == 256 and (np.diff(out[..., 0].reshape(-1).astype(int)) >= 0).all()


def test_fashion_mnist_on_a_folder_without_its_files_is_one_error_and_writes_nothing(tmp_path):
    from pml_vmf.data import DatasetNotFoundError, read_fashion_mnist

    with pytest.raises(DatasetNotFoundError, match=r"IDX files not found in .*missing train-images-idx3-ubyte"):
        read_fashion_mnist(tmp_path)
    assert list(tmp_path.iterdir()) == []  # no FashionMNIST/raw made in the user's folder
