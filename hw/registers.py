"""Register description shared by the hardware register bank and the host software.

Pure Python on purpose (no Amaranth import): the PYNQ/host driver uses the same
:class:`RegisterMap` (or its JSON form, :meth:`RegisterMap.to_dict`) to address registers and
:func:`encode`/:func:`decode` to pack field values, so hardware and software cannot drift apart.
Small and generic because amaranth-soc is not on the package registries; the project keeps its
own minimal CSR description instead.

Every register is 32 bits wide and word aligned. A register holds one or more non-overlapping
fields, each with its own :class:`Access` mode.
"""

import enum
import re
from dataclasses import dataclass

__all__ = ["Access", "Field", "Register", "RegisterMap", "encode", "decode"]

DATA_WIDTH = 32

# The same rule as amaranth.lib.wiring member names: the bank turns names into ports.
_NAME_RE = re.compile(r"^[A-Za-z][0-9A-Za-z_]*$")


class Access(enum.Enum):
    """How host and hardware share a field."""
    #: Hardware drives the value; the host reads it; host writes are ignored.
    RO = "RO"
    #: The host writes and reads back; hardware sees the stored value.
    RW = "RW"
    #: Write-one-to-pulse: each bit written as 1 gives a one-cycle pulse to hardware; reads as 0.
    W1P = "W1P"
    #: Status bit set by a one-cycle hardware pulse, held until the host writes 1 to it.
    W1C = "W1C"


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _check_name(kind, name):
    if not isinstance(name, str):
        raise TypeError(f"{kind} name must be a string, not {name!r}")
    if not _NAME_RE.match(name):
        raise ValueError(f"{kind} name must be an identifier of letters, digits and '_' "
                         f"starting with a letter, not {name!r}")


@dataclass(frozen=True)
class Field:
    """A bit range ``[offset, offset + width)`` of a 32-bit register.

    ``reset`` is the value after reset of an RW field's storage or a W1C field's held bits;
    it must be 0 for RO (hardware drives them) and W1P (pulses idle at 0) fields.
    """
    name: str
    offset: int
    width: int
    access: Access
    reset: int = 0
    doc: str = ""

    def __post_init__(self):
        _check_name("Field", self.name)
        name = self.name
        if not _is_int(self.offset):
            raise TypeError(f"Field {name!r}: offset must be an integer, not {self.offset!r}")
        if self.offset < 0:
            raise ValueError(f"Field {name!r}: offset must be a non-negative integer, "
                             f"not {self.offset!r}")
        if not _is_int(self.width):
            raise TypeError(f"Field {name!r}: width must be a positive integer, not {self.width!r}")
        if self.width < 1:
            raise ValueError(f"Field {name!r}: width must be a positive integer, "
                             f"not {self.width!r}")
        if self.offset + self.width > DATA_WIDTH:
            raise ValueError(f"Field {name!r}: offset + width must be at most {DATA_WIDTH}, "
                             f"not {self.offset} + {self.width} = {self.offset + self.width}")
        if not isinstance(self.access, Access):
            raise TypeError(f"Field {name!r}: access must be an Access, not {self.access!r}")
        if not _is_int(self.reset):
            raise TypeError(f"Field {name!r}: reset must be an integer, not {self.reset!r}")
        if not 0 <= self.reset < 2 ** self.width:
            raise ValueError(f"Field {name!r}: reset must be in range [0, {2 ** self.width}), "
                             f"not {self.reset!r}")
        if self.reset and self.access in (Access.RO, Access.W1P):
            raise ValueError(f"Field {name!r}: reset must be 0 for {self.access.value} fields, "
                             f"not {self.reset!r}")
        if not isinstance(self.doc, str):
            raise TypeError(f"Field {name!r}: doc must be a string, not {self.doc!r}")

    @property
    def mask(self):
        """The field's bits within the register word."""
        return ((1 << self.width) - 1) << self.offset


@dataclass(frozen=True)
class Register:
    """A word-aligned 32-bit register made of non-overlapping fields (accesses may be mixed)."""
    name: str
    address: int
    fields: "tuple[Field, ...]"
    doc: str = ""

    def __post_init__(self):
        _check_name("Register", self.name)
        name = self.name
        if not _is_int(self.address):
            raise TypeError(f"Register {name!r}: address must be an integer, not {self.address!r}")
        if self.address < 0 or self.address % 4:
            raise ValueError(f"Register {name!r}: address must be a non-negative multiple of 4, "
                             f"not {self.address:#x}")
        if isinstance(self.fields, (str, bytes)):
            raise TypeError(f"Register {name!r}: fields must be an iterable of Field, "
                            f"not {self.fields!r}")
        try:
            fields = tuple(self.fields)
        except TypeError:
            raise TypeError(f"Register {name!r}: fields must be an iterable of Field, "
                            f"not {self.fields!r}") from None
        object.__setattr__(self, "fields", fields)  # accept lists, keep the dataclass frozen
        if not fields:
            raise ValueError(f"Register {name!r}: must have at least one field")
        used, names = 0, set()
        for field in fields:
            if not isinstance(field, Field):
                raise TypeError(f"Register {name!r}: fields must be Field objects, not {field!r}")
            if field.name in names:
                raise ValueError(f"Register {name!r}: duplicate field name {field.name!r}")
            if used & field.mask:
                raise ValueError(f"Register {name!r}: field {field.name!r} at bits "
                                 f"[{field.offset + field.width - 1}:{field.offset}] overlaps "
                                 f"another field")
            used |= field.mask
            names.add(field.name)
        if not isinstance(self.doc, str):
            raise TypeError(f"Register {name!r}: doc must be a string, not {self.doc!r}")

    def field(self, name):
        """The field called ``name`` (KeyError if there is none)."""
        for field in self.fields:
            if field.name == name:
                return field
        raise KeyError(f"Register {self.name!r} has no field {name!r}")


class RegisterMap:
    """An ordered set of registers with unique names and addresses.

    ``address_width`` is the smallest width (at least 4 bits) with
    ``2 ** address_width >= highest address + 4``, i.e. it holds every byte of every register.
    """
    data_width = DATA_WIDTH

    def __init__(self, registers):
        registers = tuple(registers)
        by_name, by_addr = {}, {}
        for reg in registers:
            if not isinstance(reg, Register):
                raise TypeError(f"Registers must be Register objects, not {reg!r}")
            if reg.name in by_name:
                raise ValueError(f"Duplicate register name {reg.name!r}")
            if reg.address in by_addr:
                raise ValueError(f"Register {reg.name!r}: address {reg.address:#x} is already "
                                 f"used by register {by_addr[reg.address].name!r}")
            by_name[reg.name] = by_addr[reg.address] = reg
        self._registers = registers
        self._by_name = by_name

    @property
    def registers(self):
        return self._registers

    @property
    def address_width(self):
        top = max((reg.address for reg in self._registers), default=0) + 4
        return max(4, (top - 1).bit_length())

    def __getitem__(self, name):
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"No register named {name!r}") from None

    def __contains__(self, name):
        return name in self._by_name

    def __iter__(self):
        return iter(self._registers)

    def __len__(self):
        return len(self._registers)

    def __eq__(self, other):
        return isinstance(other, RegisterMap) and self._registers == other._registers

    def __repr__(self):
        return f"RegisterMap({list(self._registers)!r})"

    def address(self, name):
        """Byte address of register ``name``."""
        return self[name].address

    def field(self, reg_name, field_name):
        """Field ``field_name`` of register ``reg_name``."""
        return self[reg_name].field(field_name)

    def to_dict(self):
        """JSON-serialisable description (the host driver's register file)."""
        return {
            "data_width": self.data_width,
            "address_width": self.address_width,
            "registers": [
                {"name": reg.name, "address": reg.address, "doc": reg.doc,
                 "fields": [{"name": f.name, "offset": f.offset, "width": f.width,
                             "access": f.access.value, "reset": f.reset, "doc": f.doc}
                            for f in reg.fields]}
                for reg in self._registers],
        }

    @classmethod
    def from_dict(cls, d):
        """Inverse of :meth:`to_dict`; checks the stored widths against the rebuilt map."""
        if d.get("data_width", DATA_WIDTH) != DATA_WIDTH:
            raise ValueError(f"data_width must be {DATA_WIDTH}, not {d['data_width']!r}")
        regmap = cls(
            Register(r["name"], r["address"],
                     tuple(Field(f["name"], f["offset"], f["width"], Access(f["access"]),
                                 f.get("reset", 0), f.get("doc", ""))
                           for f in r["fields"]),
                     r.get("doc", ""))
            for r in d["registers"])
        if "address_width" in d and d["address_width"] != regmap.address_width:
            raise ValueError(f"address_width must be {regmap.address_width} for these "
                             f"registers, not {d['address_width']!r}")
        return regmap


def encode(reg, **field_values):
    """Pack field values into a register word; unnamed fields are 0 (no read-modify-write)."""
    word = 0
    for name, value in field_values.items():
        try:
            field = reg.field(name)
        except KeyError:
            raise ValueError(f"Register {reg.name!r} has no field {name!r}") from None
        if not _is_int(value):
            raise TypeError(f"Field {name!r}: value must be an integer, not {value!r}")
        if not 0 <= value < 2 ** field.width:
            raise ValueError(f"Field {name!r}: value must be in range [0, {2 ** field.width}), "
                             f"not {value!r}")
        word |= value << field.offset
    return word


def decode(reg, value):
    """Unpack a register word into ``{field name: value}``; bits outside fields are ignored."""
    if not _is_int(value):
        raise TypeError(f"Register {reg.name!r}: value must be an integer, not {value!r}")
    if not 0 <= value < 2 ** DATA_WIDTH:
        raise ValueError(f"Register {reg.name!r}: value must be in range [0, 2**{DATA_WIDTH}), "
                         f"not {value!r}")
    return {f.name: (value >> f.offset) & ((1 << f.width) - 1) for f in reg.fields}
