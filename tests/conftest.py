"""Shared fixtures: the device under test comes from PML_VMF_TEST_DEVICE (default cpu), as timm's tests do."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEST_DEVICE = torch.device(os.environ.get("PML_VMF_TEST_DEVICE", "cpu"))
if os.environ.get("PYTEST_XDIST_WORKER"):
    # One thread per pytest-xdist worker: `make test`'s workers share the machine's cores, and the in-process tests'
    # small tensors gain nothing from more threads, only contention (a loop of 2,000 loss calls took 70 s instead
    # of 2 s on a 2-core machine with two workers of two threads each).
    torch.set_num_threads(1)


@pytest.fixture
def device() -> torch.device:
    return TEST_DEVICE


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


_REPORTED: "list[str]" = []


@pytest.fixture
def report():
    """Lines a test wants shown in the terminal summary (measured numbers, not assertions)."""
    return _REPORTED.append


def pytest_sessionfinish(session) -> None:
    if hasattr(session.config, "workeroutput"):  # a pytest-xdist worker: hand the lines to the controller
        session.config.workeroutput["reported"] = list(_REPORTED)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """pytest-xdist's controller collects what each worker reported (a hook only called under xdist)."""
    _REPORTED.extend(getattr(node, "workeroutput", {}).get("reported", []))


def pytest_terminal_summary(terminalreporter) -> None:
    if _REPORTED:
        terminalreporter.section("measured by the tests")
        for line in _REPORTED:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory) -> "os.PathLike":
    """UCI digits (1,797 real 8x8 images, bundled with scikit-learn) as an image-folder tree root/<class>/<n>.png."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("digits")
    digits = load_digits()
    images = (digits.images * (255 / 16)).astype(np.uint8)
    for n, (image, label) in enumerate(zip(images, digits.target)):
        (root / str(label)).mkdir(exist_ok=True)
        Image.fromarray(image).save(root / str(label) / f"{n:04d}.png")
    return root


@pytest.fixture(scope="session")
def digits_closed_set_folder(digits_folder, tmp_path_factory) -> "os.PathLike":
    """The same digits as root/{train,test}/<class>/ (every fourth image of a class in test): a closed-set tree."""
    tree = tmp_path_factory.mktemp("digits_closed")
    for label_dir in digits_folder.iterdir():
        for n, image in enumerate(sorted(label_dir.iterdir())):
            target = tree / ("test" if n % 4 == 0 else "train") / label_dir.name / image.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(image)
    return tree


@pytest.fixture(scope="session")
def uninterrupted_run(digits_folder, tmp_path_factory) -> "os.PathLike":
    """Digits for SHORT_RUN's 3 epochs of 4 steps with TensorBoard on: the run that stopped-and-resumed runs must
    reproduce, and whose logs the logging tests read. Trained once per session, also under pytest-xdist: the first
    worker to need it trains it in the temporary folder the workers share, the others wait for it."""
    from filelock import FileLock

    from tests.recipe_runs import DIGITS_CONFIG, SHORT_RUN, run_train_script

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the workers' base folders are siblings
    out = shared / "uninterrupted"
    with FileLock(str(out) + ".lock"):
        if not (out / "through" / "metrics.json").is_file():
            run_train_script(
                "--config", str(DIGITS_CONFIG), "--data-root", str(digits_folder), f"run.output_dir={out}", *SHORT_RUN,
                "run.name=through", "run.trackers=[tensorboard]",
            )  # fmt: skip
    return out / "through"
