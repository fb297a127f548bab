"""Where each dataset's files come from and go: EuroSAT's download, the instructions that name the
expected layout (appended to "not found" errors)."""

from __future__ import annotations

from pathlib import Path

from .base import DatasetError

EUROSAT_SPLIT_FILE = "split_zhou_EuroSAT.json"
EUROSAT_IMAGE_DIR = "2750"
EUROSAT_URL = "https://madm.dfki.de/files/sentinel/EuroSAT.zip"
EUROSAT_SPLIT_GDRIVE_ID = "1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o"
CIRCUITS_URL = "https://figshare.com (search: 'Low-Resource Image Transfer Evaluation Benchmark')"


def eurosat_instructions(base: Path) -> str:
    """Where EuroSAT's files go, for the dataset folder ``base`` (``<data root>/eurosat``)."""
    return (
        f"EuroSAT expects '{base}/{EUROSAT_IMAGE_DIR}/<Class>/<Class>_<n>.jpg' (the folder inside "
        f"the official EuroSAT.zip, {EUROSAT_URL}) and '{base}/{EUROSAT_SPLIT_FILE}' (CoOp's split, "
        f"Google Drive id {EUROSAT_SPLIT_GDRIVE_ID}). Online, run "
        f"`python -m lowres_clip.cli download eurosat --root {base.parent}`."
    )


def download_eurosat(root: str | Path) -> Path:
    """Download EuroSAT RGB and CoOp's split into ``root/eurosat``; offline, explain what to put where.

    A download that fails leaves no empty ``eurosat`` folder behind.
    """
    from torchvision.datasets.utils import download_and_extract_archive, download_file_from_google_drive

    dest = Path(root) / "eurosat"
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if not (dest / EUROSAT_IMAGE_DIR).is_dir():
            download_and_extract_archive(EUROSAT_URL, download_root=str(dest), remove_finished=True)
        if not (dest / EUROSAT_SPLIT_FILE).is_file():
            download_file_from_google_drive(EUROSAT_SPLIT_GDRIVE_ID, str(dest), EUROSAT_SPLIT_FILE)
    except Exception as exc:  # network errors come in many types
        if created and dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()
        raise DatasetError(f"Could not download EuroSAT ({type(exc).__name__}: {exc}). " + eurosat_instructions(dest)) from exc
    return dest


def circuits_instructions(base: Path) -> str:
    """Where Circuits' files go, for the dataset folder ``base`` (``<data root>/circuits``)."""
    return (
        f"Circuits expects its images in '{base}/data/' (as the official release; '{base}/images/' or "
        f"'{base}' itself also work) and either the official CSV form '{base}/label_map.csv' + "
        f"'{base}/{{train,val,test}}.csv' (rows: id, filename, class id; a header row is optional; "
        f"'{{split}}_5_shots.csv' names work too) or the JSON form '{base}/split_config.json' + "
        f"'{base}/label_map.json'. The images are distributed only through the paper's figshare "
        f"record: {CIRCUITS_URL}."
    )
