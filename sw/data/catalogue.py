"""What files the data root holds: every file the loaders read, with its path relative
to the root (the layout of the shared data folder), its sha256 and where it comes from.

This is data, not behaviour: the look-up (:mod:`.lookup`), the download (:mod:`.fetch`)
and the loaders read it; it imports nothing from them.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

__all__ = ["MIRROR_ENV", "FMNIST_BASE_URL", "HAR_ZIP_URL", "FAN_RAW_BASE_URL",
           "DataFile", "FILES", "canonical_url", "mirror_url"]

MIRROR_ENV = "SKIP2LORA_DATA_MIRROR"
"""Environment variable with a base URL laid out like the data root; overrides every source."""

# Canonical public sources.  They are read at call time (``DataFile.base`` names one of
# them), so tests and users can point them elsewhere.
FMNIST_BASE_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"
HAR_ZIP_URL = ("https://archive.ics.uci.edu/static/public/240/"
               "human+activity+recognition+using+smartphones.zip")
FAN_RAW_BASE_URL = ("https://raw.githubusercontent.com/matutani/cooling-fan/"
                    "fcd19b750f7c50bf145907063b0ff1047e73c010/DATA")


@dataclass(frozen=True)
class DataFile:
    """One file of the data root.

    ``kind`` says how it is obtained when missing: ``"url"`` (plain download of ``name``
    below the base URL named by ``base``), ``"har-zip"`` (extracted from the UCI archive,
    member ``member``; :mod:`.har_archive`), ``"build"`` (built from other files;
    :mod:`.fan_build`) or ``"mirror"`` (only available from a mirror).  ``sidecar`` files
    are also accepted when their hash matches ``<file>.sha256`` written by the builder.
    """

    relpath: str
    sha256: str
    kind: str
    base: str = ""
    member: str = ""
    sidecar: bool = False

    @property
    def name(self) -> str:
        return self.relpath.rsplit("/", 1)[-1]

    def source_description(self) -> str:
        """Human-readable canonical source, for error messages."""
        if self.kind == "url":
            return canonical_url(self)
        if self.kind == "har-zip":
            return f"{HAR_ZIP_URL} (member {self.member!r} of the inner 'UCI HAR Dataset.zip')"
        if self.kind == "build":
            return f"built from the raw zips below {FAN_RAW_BASE_URL}"
        return f"a mirror set with {MIRROR_ENV}"


def canonical_url(spec: DataFile) -> str:
    """The public URL of a ``"url"`` file (its base URL as currently set, plus its name)."""
    base = globals()[spec.base] if spec.base else ""
    return f"{base.rstrip('/')}/{urllib.parse.quote(spec.name)}"


def mirror_url(mirror: str, spec: DataFile) -> str:
    """Where a mirror laid out like the data root serves ``spec``."""
    return f"{mirror.rstrip('/')}/{urllib.parse.quote(spec.relpath)}"


def _fan_raw(name: str, sha: str) -> DataFile:
    return DataFile(f"cooling-fan/raw/{name}.zip", sha, "url", base="FAN_RAW_BASE_URL")


_ENTRIES = [
    DataFile("fashion-mnist/train-images-idx3-ubyte.gz",
             "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", "url", "FMNIST_BASE_URL"),
    DataFile("fashion-mnist/train-labels-idx1-ubyte.gz",
             "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", "url", "FMNIST_BASE_URL"),
    DataFile("fashion-mnist/t10k-images-idx3-ubyte.gz",
             "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", "url", "FMNIST_BASE_URL"),
    DataFile("fashion-mnist/t10k-labels-idx1-ubyte.gz",
             "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", "url", "FMNIST_BASE_URL"),
    # The gzip is how the shared folder stores X_train.txt; the UCI archive yields the
    # uncompressed file, so either is accepted.
    DataFile("uci-har/X_train.txt.gz",
             "54e67d0d2a924605bdbbb99c104196dde48bc3a2a4c9c2fdb8b559d305f13cd3", "mirror"),
    DataFile("uci-har/X_train.txt",
             "9c1246099c8d5463779eec5a3845cc3898df9d8c715441ab2a1232d4421fc42f", "har-zip",
             member="UCI HAR Dataset/train/X_train.txt"),
    DataFile("uci-har/y_train.txt",
             "415b3357e2e2d5e70a45c781947c6bdd80e0410a579d862eedcd6bbce3c694ef", "har-zip",
             member="UCI HAR Dataset/train/y_train.txt"),
    DataFile("uci-har/subject_train.txt",
             "66e1e2fbe9b396fa5155f531dc3348c803f503be663e2318772d49947db9153a", "har-zip",
             member="UCI HAR Dataset/train/subject_train.txt"),
    DataFile("cooling-fan/fan_damage1_spectra256.npz",
             "0adfa04c380daa7e0ed69c0c5248fcec3bbde94c0ba697a0141624b2a1bd57ba", "build", sidecar=True),
    DataFile("cooling-fan/fan_damage2_spectra256.npz",
             "15d138012853d6e61942ce44041a0d8a8e9f1528c262b035ed6ddada70cc26b0", "build", sidecar=True),
    _fan_raw("12cm_hmlo_normal_silentA_1", "5a2b0281bf97e0849001c4cea456b2bb670a463ce1acacc22288d55cdf817f0f"),
    _fan_raw("12cm_hmlo_normal_silentA_2", "c70961379f2020b76ad48d575703278f238b6f6b4a11cf6cc28f5e447fe002ad"),
    _fan_raw("12cm_hmlo_normal_silentB_1", "a7ef8a52e9b80ff32550d5491b1594166a484fc5dfc7a614f5a757964ce62217"),
    _fan_raw("12cm_hmlo_normal_silentB_2", "801f826ae209a15fa4a4f2bceb851455a101604c7626f4dc853e0c7717ef6fbb"),
    _fan_raw("12cm_hmlo_normal_noisy_1", "8266c411194f6aa71b814d1c1c43c141425c0a825c7600e0e943864eaa17a285"),
    _fan_raw("12cm_hmlo_normal_noisy_2", "3ea395d09681c054de21bd6c94161bc92be268df5e1f1630de2dce76d788b7e8"),
    _fan_raw("12cm_hmlo_damage1_silentA_1", "eb41e3d247dccf1ba26eea1717f35ce142d0f704817eb30233bb0d58d701715d"),
    _fan_raw("12cm_hmlo_damage1_silentA_2", "3c00a833387b05ccf2558d37fa564e747dcfa0bf0719a9ca3747e487ec2b0eb1"),
    _fan_raw("12cm_hmlo_damage1_silentB_1", "9c6d20cb1362d176b897b4067a3914b10a364e8e0dffbbd9207384f7957cf9b9"),
    _fan_raw("12cm_hmlo_damage1_silentB_2", "2784a5e76710e906bc74b02cf0cde28de2047ff63d93342fe61c540cc28501eb"),
    _fan_raw("12cm_hmlo_damage1_noisy_1", "7795fd2741062d5c51ffb4b01927ca7ea4d5352eb6b6f1efc65c1c2f8007be0d"),
    _fan_raw("12cm_hmlo_damage1_noisy_2", "b268d5b8cc2b742f60a01ee765267b0084d50a29ccc358adf30d379cb2acfd55"),
    _fan_raw("12cm_hmlo_damage2_silentA_1", "84f31ef22fa241fae8cd96dcb251ac9b5be4297739288bcdf1feca1b8f8fb03d"),
    _fan_raw("12cm_hmlo_damage2_silentA_2", "01ef93c3e1e7473b218011c2ecfd89b16908732b7dae281aa8581b76c00bff2c"),
    _fan_raw("12cm_hmlo_damage2_silentB_1", "756bbcb86107d747ef530e4fd1cf92f084f832779e8d90d4918938180f94eece"),
    _fan_raw("12cm_hmlo_damage2_silentB_2", "49d5b6bba0ed63c9f2bb06012ef505568db809dca47b23cffddf1661526b0a4b"),
    _fan_raw("12cm_hmlo_damage2_noisy_1", "9cce3d67746930fbc31cb332ff70ced1a43f23aefbc36da924c4e12650ba4983"),
    _fan_raw("12cm_hmlo_damage2_noisy_2", "9fee65602474a321328ba4103135bf42de47b5f14eac150a7ab4b451679d37c1"),
]

FILES: dict[str, DataFile] = {f.relpath: f for f in _ENTRIES}
"""Every known file, keyed by its path relative to the data root."""
