"""Share packs: the declarative description of Delta Sharing recipients and shares (no Dagster here).

A share pack is a YAML file or its Excel twin (sheets ``metadata``, ``recipient``, ``share``,
``data_objects`` and an optional ``options``). ``load_sharepack(path)`` reads either, validates it
with pydantic plus cross-checks, and returns a ``SharePack``. On any problem it raises
``SharePackInvalid`` listing *every* problem at once, each with its location (YAML line, or Excel
sheet, row and column), the field, and what to do. An invalid pack must never reach the reconciler.

YAML format (what requesters already write; ``options`` and the per-resource ``adopt`` /
``allow_replace`` flags are optional additions)::

    metadata: {requestor: ..., project_name: ..., business_line: ..., strategy: NEW|UPDATE, pack_id: ...}
    options: {allow_replace: false, adopt: false, prune: false}
    recipient:
      - {name: partner-acme, type: D2O, email: ..., allowed_ips: [203.0.113.0/24], comment: ...}
      - {name: analytics-workspace, type: D2D, metastore_id: aws:us-west-2:<uuid>}
    share:
      - name: claims_gold
        comment: ...
        recipients: [partner-acme, analytics-workspace]
        data_objects:
          - main.gold.claims_by_state_month          # or a mapping:
          - {name: main.gold.x, shared_as: gold.x, comment: ..., cdf_enabled: true, history_sharing: true}
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_ALLOWED_IPS = 100
"""Databricks accepts at most 100 IP addresses / CIDR ranges per recipient."""

METASTORE_ID_PATTERN = re.compile(
    r"^(aws|azure|gcp):[a-z0-9-]+:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,254}$")
TABLE_NAME_PATTERN = re.compile(r"^[^.\s`]+\.[^.\s`]+\.[^.\s`]+$")
SHARED_AS_PATTERN = re.compile(r"^[^.\s`]+\.[^.\s`]+$")

Path_ = tuple[str | int, ...]


# -- problems ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PackProblem:
    """One problem in a pack: where it is (human-readable), the field path, and what is wrong."""

    location: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.field}: {self.message}"


class SharePackInvalid(Exception):
    """A share pack failed validation. ``problems`` lists every problem found; nothing was applied."""

    def __init__(self, source: str, problems: Sequence[PackProblem]) -> None:
        self.source = source
        self.problems = sorted(problems, key=_reading_order)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"Share pack {source} has {len(self.problems)} problem(s); nothing was applied. "
            f"Fix them and run again:\n{lines}"
        )


def _reading_order(problem: PackProblem) -> list[str | int]:
    """Natural order of locations (line 9 before line 10; sheet, then row), as a reader meets them."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", problem.location)]


# -- the model ---------------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def _check_name(value: str) -> str:
    if not NAME_PATTERN.match(value):
        raise ValueError(
            f"{value!r} is not a valid name: use letters, digits, '_' or '-' (no dots or spaces), "
            "at most 255 characters"
        )
    return value


class PackMetadata(_Strict):
    requestor: str = Field(min_length=1)
    project_name: str = Field(min_length=1)
    business_line: str | None = None
    strategy: Literal["NEW", "UPDATE"] | None = None
    pack_id: str | None = None
    """Identifies the pack in the managed-by marker; defaults to a slug of ``project_name``."""

    @field_validator("strategy", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @property
    def effective_pack_id(self) -> str:
        return self.pack_id or re.sub(r"[^a-z0-9]+", "-", self.project_name.lower()).strip("-")


class PackOptions(_Strict):
    allow_replace: bool = False
    """Allow changes that delete and recreate a resource (recipient authentication type, metastore id)."""
    adopt: bool = False
    """Take over existing resources of the same name that no pack manages yet."""
    prune: bool = False
    """Delete resources this pack manages that are no longer in it (otherwise they are listed as orphaned)."""


class RecipientSpec(_Strict):
    name: str
    type: Literal["D2O", "D2D"]
    email: str | None = None
    comment: str | None = None
    allowed_ips: list[str] = Field(default_factory=list)
    metastore_id: str | None = None
    adopt: bool | None = None
    allow_replace: bool | None = None

    _name = field_validator("name")(classmethod(lambda cls, v: _check_name(v)))

    @field_validator("type", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("allowed_ips")
    @classmethod
    def _cidrs(cls, values: list[str]) -> list[str]:
        bad = []
        for value in values:
            try:
                network = ipaddress.ip_network(value, strict=True)
            except ValueError:
                bad.append(value)
                continue
            if network.version != 4:
                bad.append(value)
        if bad:
            raise ValueError(
                f"not an IPv4 address or CIDR range: {', '.join(map(repr, bad))} "
                "(write e.g. 203.0.113.0/24; host bits must be zero)"
            )
        if len(values) > MAX_ALLOWED_IPS:
            raise ValueError(
                f"{len(values)} entries, at most {MAX_ALLOWED_IPS} are allowed: merge ranges into wider CIDRs"
            )
        return values

    @field_validator("metastore_id")
    @classmethod
    def _metastore(cls, value: str | None) -> str | None:
        if value is not None and not METASTORE_ID_PATTERN.match(value):
            raise ValueError(
                f"{value!r} is not a metastore id: write <cloud>:<region>:<metastore-uuid>, "
                "e.g. aws:us-west-2:19a85dee-54bc-43a2-87ab-023d0ec16013 (the recipient finds it with "
                "SELECT CURRENT_METASTORE())"
            )
        return value

    @property
    def authentication_type(self) -> str:
        """The Unity Catalog authentication type: TOKEN for open sharing, DATABRICKS for D2D."""
        return "TOKEN" if self.type == "D2O" else "DATABRICKS"


class DataObjectSpec(_Strict):
    name: str
    shared_as: str | None = None
    comment: str | None = None
    cdf_enabled: bool | None = None
    history_sharing: bool | None = None

    @field_validator("name")
    @classmethod
    def _table(cls, value: str) -> str:
        if not TABLE_NAME_PATTERN.match(value):
            raise ValueError(
                f"{value!r} is not a table name: write catalog.schema.table, e.g. main.gold.claims"
            )
        return value

    @field_validator("shared_as")
    @classmethod
    def _shared_as(cls, value: str | None) -> str | None:
        if value is not None and not SHARED_AS_PATTERN.match(value):
            raise ValueError(f"{value!r} is not a shared name: write schema.table, e.g. gold.claims")
        return value

    @property
    def table_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]


class ShareSpec(_Strict):
    name: str
    comment: str | None = None
    recipients: list[str] = Field(default_factory=list)
    data_objects: list[DataObjectSpec] = Field(default_factory=list)
    adopt: bool | None = None
    allow_replace: bool | None = None

    _name = field_validator("name")(classmethod(lambda cls, v: _check_name(v)))

    @field_validator("data_objects", mode="before")
    @classmethod
    def _strings_are_names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": item} if isinstance(item, str) else item for item in value]
        return value


class SharePack(_Strict):
    metadata: PackMetadata
    options: PackOptions = Field(default_factory=PackOptions)
    recipient: list[RecipientSpec] = Field(default_factory=list)
    share: list[ShareSpec] = Field(default_factory=list)

    @property
    def pack_id(self) -> str:
        return self.metadata.effective_pack_id

    def adopts(self, spec: RecipientSpec | ShareSpec) -> bool:
        return self.options.adopt if spec.adopt is None else spec.adopt

    def allows_replace(self, spec: RecipientSpec | ShareSpec) -> bool:
        return self.options.allow_replace if spec.allow_replace is None else spec.allow_replace


@dataclass(frozen=True)
class LoadedPack:
    """A validated pack, the file it came from, and where each field is in that file."""

    pack: SharePack
    source: str
    locate: Callable[[Path_], str] | None = None
    """Field path → "file line N" (YAML) or "file sheet 'x' row N column 'y' (cell C3)" (Excel)."""


# -- validation with locations -----------------------------------------------------------------------
Locator = Callable[[Path_], str]


def _dotted(path: Path_) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(pack)"


_ALLOWED_KEYS: dict[str, list[str]] = {
    "": list(SharePack.model_fields),
    "metadata": list(PackMetadata.model_fields),
    "options": list(PackOptions.model_fields),
    "recipient": list(RecipientSpec.model_fields),
    "share": list(ShareSpec.model_fields),
    "data_objects": list(DataObjectSpec.model_fields),
}


def _unknown_key_message(path: Path_) -> str:
    key = str(path[-1])
    parent = next((str(p) for p in reversed(path[:-1]) if isinstance(p, str)), "")
    allowed = _ALLOWED_KEYS.get(parent, [])
    hint = difflib.get_close_matches(key, allowed, n=1)
    suggestion = f" Did you mean {hint[0]!r}?" if hint else ""
    return f"unknown key {key!r}: remove it or use one of {', '.join(allowed)}.{suggestion}"


def validate_pack(raw: Any, source: str, locate: Locator) -> LoadedPack:
    """Validate raw pack content (dicts and lists). Raise ``SharePackInvalid`` with every problem."""
    problems: list[PackProblem] = []

    def add(path: Path_, message: str) -> None:
        problems.append(PackProblem(locate(path), _dotted(path), message))

    if not isinstance(raw, dict):
        add((), "the pack must be a mapping with the sections metadata, recipient and share")
        raise SharePackInvalid(source, problems)

    pack: SharePack | None = None
    try:
        pack = SharePack.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors():
            path = tuple(error["loc"])
            if error["type"] == "extra_forbidden":
                add(path, _unknown_key_message(path))
            elif error["type"] == "missing":
                add(path, "required field is missing: add it")
            else:
                add(path, str(error["msg"]).removeprefix("Value error, "))

    problems.extend(_cross_checks(raw, locate))
    if problems or pack is None:
        raise SharePackInvalid(source, _unique(problems))
    return LoadedPack(pack, source, locate)


def _unique(problems: list[PackProblem]) -> list[PackProblem]:
    seen: set[PackProblem] = set()
    return [p for p in problems if not (p in seen or seen.add(p))]


def _items(raw: dict[str, Any], section: str) -> list[tuple[int, dict[str, Any]]]:
    value = raw.get(section)
    if not isinstance(value, list):
        return []
    return [(i, item) for i, item in enumerate(value) if isinstance(item, dict)]


def _cross_checks(raw: dict[str, Any], locate: Locator) -> list[PackProblem]:
    """Checks across items, done on the raw content so that they run even when items are invalid."""
    problems: list[PackProblem] = []

    def add(path: Path_, message: str) -> None:
        problems.append(PackProblem(locate(path), _dotted(path), message))

    recipient_names: dict[str, int] = {}
    for i, item in _items(raw, "recipient"):
        name = item.get("name")
        if isinstance(name, str):
            if name in recipient_names:
                add(
                    ("recipient", i, "name"),
                    f"duplicate recipient {name!r} (first at recipient[{recipient_names[name]}]): "
                    "keep one entry per recipient",
                )
            else:
                recipient_names[name] = i
        kind = str(item.get("type", "")).strip().upper()
        if kind == "D2D" and item.get("allowed_ips"):
            add(
                ("recipient", i, "allowed_ips"),
                "a D2D (Databricks-to-Databricks) recipient cannot have allowed_ips: "
                "remove them, or make the recipient D2O",
            )
        if kind == "D2D" and not item.get("metastore_id"):
            add(("recipient", i), "a D2D recipient needs metastore_id (<cloud>:<region>:<uuid>): add it")
        if kind == "D2O" and item.get("metastore_id"):
            add(
                ("recipient", i, "metastore_id"),
                "a D2O (open sharing) recipient has no metastore_id: remove it, or make the recipient D2D",
            )

    share_names: dict[str, int] = {}
    for i, item in _items(raw, "share"):
        name = item.get("name")
        if isinstance(name, str):
            if name in share_names:
                add(
                    ("share", i, "name"),
                    f"duplicate share {name!r} (first at share[{share_names[name]}]): "
                    "keep one entry per share",
                )
            else:
                share_names[name] = i
        granted = item.get("recipients")
        if isinstance(granted, list):
            seen: set[str] = set()
            for j, recipient in enumerate(granted):
                if not isinstance(recipient, str):
                    continue
                if recipient in seen:
                    add(("share", i, "recipients", j), f"recipient {recipient!r} is listed twice: keep one")
                seen.add(recipient)
                if recipient not in recipient_names:
                    add(
                        ("share", i, "recipients", j),
                        f"unknown recipient {recipient!r}: declare it in the "
                        f"recipient section (known: {', '.join(sorted(recipient_names)) or 'none'})",
                    )
        objects = item.get("data_objects")
        if isinstance(objects, list):
            names: set[str] = set()
            for j, obj in enumerate(objects):
                obj_name = obj if isinstance(obj, str) else obj.get("name") if isinstance(obj, dict) else None
                if isinstance(obj_name, str):
                    if obj_name in names:
                        add(("share", i, "data_objects", j), f"duplicate data object {obj_name!r}: keep one")
                    names.add(obj_name)
    return problems


# -- YAML ------------------------------------------------------------------------------------------
def _yaml_locator(source: str, root: yaml.Node | None) -> Locator:
    """Map a field path to the line of its key (mappings) or item (sequences); the deepest that exists."""

    def locate(path: Path_) -> str:
        node = root
        line = node.start_mark.line + 1 if node is not None else 1
        for part in path:
            child = None
            if isinstance(node, yaml.MappingNode) and isinstance(part, str):
                for key_node, value_node in node.value:
                    if key_node.value == part:
                        child, line = value_node, key_node.start_mark.line + 1
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                child = node.value[part]
                line = child.start_mark.line + 1
            if child is None:
                break
            node = child
        return f"{source} line {line}"

    return locate


def load_yaml(path: Path) -> LoadedPack:
    """Load and validate a YAML share pack. Raise ``SharePackInvalid`` (with line numbers) on problems."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise _unreadable(source, f"not a text file (byte {exc.start} is not UTF-8): a .yaml share pack "
                          "must be UTF-8 text; point GW_SHAREPACK at the pack, or save it as YAML") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source} line {mark.line + 1}" if mark else source
        raise SharePackInvalid(
            source, [PackProblem(where, "(yaml)", f"not valid YAML: {exc}; fix the syntax (this is the file GW_SHAREPACK names)")]
        ) from exc
    return validate_pack(raw, source, _yaml_locator(source, root))


# -- Excel -----------------------------------------------------------------------------------------
EXCEL_SHEETS = ("metadata", "options", "recipient", "share", "data_objects")
REQUIRED_SHEETS = ("metadata", "recipient", "share", "data_objects")
_LIST_COLUMNS = {"allowed_ips", "recipients"}


def _split_list(value: Any) -> list[str]:
    return [part.strip() for part in re.split(r"[,;\n]", str(value)) if part.strip()]


def load_excel(path: Path) -> LoadedPack:
    """Load and validate an Excel share pack (one sheet per section, header in row 1).

    ``metadata`` and ``options`` hold ``key | value`` rows; ``recipient`` and ``share`` one row per item;
    ``data_objects`` one row per object with a ``share`` column naming its share. List cells
    (``allowed_ips``, ``recipients``) are comma- or newline-separated. Problems name sheet, row and column.
    """
    import openpyxl  # imported lazily: YAML packs never pay for it
    import openpyxl.utils.exceptions

    source = str(path)
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, openpyxl.utils.exceptions.InvalidFileException, KeyError, OSError) as exc:
        raise _unreadable(source, f"not an Excel workbook ({type(exc).__name__}: {exc}): an .xlsx share pack "
                          f"must be a workbook with the sheets {', '.join(REQUIRED_SHEETS)}; point "
                          "GW_SHAREPACK at one, or use a .yaml pack") from None
    missing = [sheet for sheet in REQUIRED_SHEETS if sheet not in workbook.sheetnames]
    if missing:
        workbook.close()
        raise _unreadable(source, f"the workbook has no sheet {', '.join(map(repr, missing))}: a share pack "
                          f"workbook needs the sheets {', '.join(REQUIRED_SHEETS)} (options is optional); "
                          "add the missing sheet(s), e.g. from the shipped gold_marts.xlsx")
    cells: dict[Path_, str] = {}
    problems: list[PackProblem] = []
    raw: dict[str, Any] = {}

    def rows(sheet: str) -> list[tuple[int, dict[str, Any]]]:
        values = list(workbook[sheet].iter_rows(values_only=True))
        if not values:
            return []
        header = [str(h).strip() if h is not None else "" for h in values[0]]
        result = []
        for offset, row in enumerate(values[1:], start=2):
            record = {
                header[c]: (v.strip() if isinstance(v, str) else v)
                for c, v in enumerate(row)
                if c < len(header) and header[c] and v is not None and v != ""
            }
            if record:
                result.append((offset, record))
        return result

    def column_letter(sheet: str, key: str) -> str:
        header = next(workbook[sheet].iter_rows(max_row=1, values_only=True), ())
        for c, h in enumerate(header):
            if h is not None and str(h).strip() == key:
                return openpyxl.utils.get_column_letter(c + 1)
        return "?"

    for sheet in workbook.sheetnames:
        if sheet not in EXCEL_SHEETS:
            problems.append(
                PackProblem(
                    f"{source} sheet {sheet!r}",
                    sheet,
                    f"unknown sheet: rename it to one of {', '.join(EXCEL_SHEETS)} or remove it",
                )
            )

    for section in ("metadata", "options"):
        if section not in workbook.sheetnames:
            continue
        raw[section] = {}
        cells[(section,)] = f"{source} sheet {section!r}"
        for row_number, record in rows(section):
            key, value = record.get("key"), record.get("value")
            if key is None:
                continue
            raw[section][str(key)] = value
            cells[(section, str(key))] = f"{source} sheet {section!r} row {row_number}"

    for section in ("recipient", "share"):
        if section not in workbook.sheetnames:
            continue
        items = []
        for row_number, record in rows(section):
            index = len(items)
            for column in _LIST_COLUMNS & record.keys():
                record[column] = _split_list(record[column])
            items.append(record)
            cells[(section, index)] = f"{source} sheet {section!r} row {row_number}"
            for key in record:
                cells[(section, index, key)] = (
                    f"{source} sheet {section!r} row {row_number} column {key!r} "
                    f"(cell {column_letter(section, key)}{row_number})"
                )
        raw[section] = items

    if "data_objects" in workbook.sheetnames:
        share_index = {item.get("name"): i for i, item in enumerate(raw.get("share", []))}
        for row_number, record in rows("data_objects"):
            share_name = record.pop("share", None)
            where = f"{source} sheet 'data_objects' row {row_number}"
            if share_name not in share_index:
                problems.append(
                    PackProblem(
                        where,
                        "share",
                        f"data object row names share {share_name!r}, which is "
                        "not in the share sheet: fix the share column or add the share",
                    )
                )
                continue
            share = raw["share"][share_index[share_name]]
            objects = share.setdefault("data_objects", [])
            path: Path_ = ("share", share_index[share_name], "data_objects", len(objects))
            objects.append(record)
            cells[path] = where
            for key in record:
                cells[(*path, key)] = (
                    f"{where} column {key!r} (cell {column_letter('data_objects', key)}{row_number})"
                )
    workbook.close()

    def locate(path: Path_) -> str:
        for end in range(len(path), 0, -1):
            if path[:end] in cells:
                return cells[path[:end]]
        return f"{source} sheet {path[0]!r}" if path else source

    try:
        loaded = validate_pack(raw, source, locate)
    except SharePackInvalid as exc:
        raise SharePackInvalid(source, problems + exc.problems) from None
    if problems:
        raise SharePackInvalid(source, problems)
    return loaded


def _unreadable(source: str, message: str) -> SharePackInvalid:
    """The one error for a pack file that cannot be read at all, naming it and GW_SHAREPACK."""
    return SharePackInvalid(source, [PackProblem(source, "GW_SHAREPACK", message)])


# -- entry point -----------------------------------------------------------------------------------
DEFAULT_SHAREPACK = Path(__file__).parent / "sharepacks" / "gold_marts.yaml"


def load_sharepack(path: str | Path | None = None) -> LoadedPack:
    """Load the pack at ``path`` (``.yaml``/``.yml`` or ``.xlsx``), or the shipped sample if None.

    Raise ``SharePackInvalid`` listing every problem (also for a missing file or unknown extension).
    """
    pack_path = Path(path) if path else DEFAULT_SHAREPACK
    source = str(pack_path)
    if not pack_path.is_file():
        raise SharePackInvalid(
            source,
            [
                PackProblem(
                    source,
                    "GW_SHAREPACK",
                    "file not found: set GW_SHAREPACK to an existing .yaml or .xlsx share pack",
                )
            ],
        )
    suffix = pack_path.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            return load_yaml(pack_path)
        if suffix == ".xlsx":
            return load_excel(pack_path)
    except OSError as exc:  # unreadable (permissions, I/O): the same one error
        raise _unreadable(source, f"cannot be read ({exc.strerror or exc}): make it readable, or point "
                          "GW_SHAREPACK at another .yaml or .xlsx share pack") from None
    raise SharePackInvalid(
        source,
        [PackProblem(source, "GW_SHAREPACK", f"unsupported extension {suffix!r}: use .yaml, .yml or .xlsx")],
    )
