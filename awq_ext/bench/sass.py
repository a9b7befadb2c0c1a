"""Read SASS: functions and instructions out of ``nvdisasm`` text, their control-flow graph, the hot loop
(natural loops found from back edges; the innermost one that streams memory or issues MMA), the
instruction classes, and the per-kernel resources (``cuobjdump -res-usage``, ``ptxas -v``).

Everything here is pure text processing. Anything that cannot be read the way the model needs it (an
unknown line, an indirect branch, a branch to a missing label, irreducible control flow, no hot loop)
raises :class:`SassError` naming the kernel and the line: a silently wrong count would be worse.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable


class SassError(RuntimeError):
    """The SASS of a kernel could not be parsed or analysed as the static model needs."""


# ---- instructions ----------------------------------------------------------------------------------------

CLASSES = ("memory", "hmma", "int_dequant", "float", "control", "other")
# Opcode base (text before the first '.') -> class. Uniform-datapath ops (U-prefix: UIADD3, ULOP3, ...)
# take their non-uniform twin's class. 'int_dequant' holds integer/logic ops and packed half2/bf16x2
# arithmetic: the dequantization and the address math; 'float' is fp32 arithmetic and conversions.
_CLASS_OF = {
    **dict.fromkeys(("LDG", "STG", "LDS", "STS", "LDSM", "STSM", "LDGSTS", "LDL", "STL", "LD", "ST", "ATOM",
                     "ATOMG", "ATOMS", "RED", "REDG", "LDC", "UTMALDG", "UTMASTG", "UTMAPF", "UBLKCP", "UBLKRED",
                     "UBLKPF", "CCTL", "SUST", "SULD", "TEX", "TLD"), "memory"),
    **dict.fromkeys(("HMMA", "HGMMA", "IMMA", "IGMMA", "QGMMA", "BMMA", "BGMMA", "DMMA", "OMMA", "QMMA"), "hmma"),
    **dict.fromkeys(("LOP3", "LOP", "SHF", "SHL", "SHR", "PRMT", "IADD3", "IADD", "IADD32I", "IMAD", "IMUL",
                     "LEA", "ISETP", "IABS", "IMNMX", "VIADD", "VIMNMX", "VIADDMNMX", "POPC", "FLO", "BREV", "SEL",
                     "ICMP", "BMSK", "SGXT", "IDP", "IDP4A", "HADD2", "HFMA2", "HMUL2", "HMNMX2", "HSETP2", "HSET2",
                     "VABSDIFF", "VABSDIFF4", "LOP32I"), "int_dequant"),
    **dict.fromkeys(("FFMA", "FADD", "FMUL", "FMNMX", "FSETP", "FSET", "FSEL", "MUFU", "F2F", "F2I", "I2F", "F2FP",
                     "FCHK", "FRND", "DADD", "DFMA", "DMUL", "DSETP", "FSWZADD", "I2FP", "F2IP", "FFMA32I",
                     "FADD32I", "FMUL32I"), "float"),
    **dict.fromkeys(("BRA", "BRX", "JMP", "JMX", "CALL", "RET", "EXIT", "BAR", "BSSY", "BSYNC", "WARPSYNC", "DEPBAR",
                     "LDGDEPBAR", "MEMBAR", "ERRBAR", "CGAERRBAR", "NOP", "YIELD", "BPT", "KILL", "WARPGROUP",
                     "SYNCS", "ELECT", "ACQBULK", "ARRIVES", "FENCE", "BMOV", "BREAK", "NANOSLEEP", "ACQSHMINIT",
                     "WARPGROUPSET", "RPCMOV"), "control"),
}
_INDIRECT = {"BRX", "JMX"}
_TERMINATORS = {"EXIT", "RET", "KILL"}
# One nvdisasm instruction line: "        /*04e0*/               @P1 BRA `(.L_x_3) ;"
_INSN = re.compile(r"^\s*/\*([0-9a-fA-F]+)\*/\s+(?:(@!?U?P(?:T|\d+))\s+)?([A-Z][A-Z0-9_]*(?:\.[A-Za-z0-9_]+)*)(.*?)\s*;\s*$")
_LABEL = re.compile(r"^([.$A-Za-z_][\w.$]*):\s*$")
_TARGET = re.compile(r"`\(([^)]+)\)")
_FUNCTION = re.compile(r"^\s*\.section\s+\.text\.(\S+?),")
# Lines that carry no instruction: directives, comments, blank lines.
_SKIP = re.compile(r"^\s*(\.|//|$)")


@dataclass(frozen=True)
class Instruction:
    offset: int
    predicate: str | None  # "@P0", "@!P1", "@PT" or None
    opcode: str            # full opcode with modifiers, e.g. "LDG.E.NA.128.CONSTANT"
    operands: str
    target: str | None     # branch target label, when the operands name one

    @property
    def base(self) -> str:
        return self.opcode.split(".", 1)[0]

    @property
    def klass(self) -> str:
        return classify(self.opcode)

    def text(self) -> str:
        return f"{self.predicate + ' ' if self.predicate else ''}{self.opcode}{self.operands}"


def classify(opcode: str) -> str:
    """The class (one of CLASSES) of a SASS opcode."""
    base = opcode.split(".", 1)[0]
    if base in _CLASS_OF:
        return _CLASS_OF[base]
    if base.startswith("U") and base[1:] in _CLASS_OF and _CLASS_OF[base[1:]] in ("int_dequant", "float", "other"):
        return _CLASS_OF[base[1:]]
    return "other"


def is_global_stream(ins: Instruction) -> bool:
    """A load that reads device memory: LDG (not LDGDEPBAR), cp.async (LDGSTS) or a TMA/bulk copy."""
    return ins.base in ("LDG", "LDGSTS", "UTMALDG", "UBLKCP")


@dataclass
class Function:
    name: str
    instructions: list[Instruction] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)  # label -> index of the instruction it marks


def parse_functions(text: str) -> dict[str, Function]:
    """Every function of an ``nvdisasm`` listing (mangled name -> Function); raises SassError on a line it
    does not understand inside a function."""
    funcs: dict[str, Function] = {}
    cur: Function | None = None
    for lineno, line in enumerate(text.splitlines(), 1):
        m = _FUNCTION.match(line)
        if m:
            cur = funcs.setdefault(m.group(1), Function(m.group(1)))
            continue
        if cur is None:
            continue
        m = _INSN.match(line)
        if m:
            operands = m.group(4)
            t = _TARGET.search(operands)
            cur.instructions.append(Instruction(int(m.group(1), 16), m.group(2), m.group(3), operands,
                                                t.group(1) if t else None))
            continue
        m = _LABEL.match(line)
        if m:
            cur.labels[m.group(1)] = len(cur.instructions)
            continue
        if _SKIP.match(line):
            continue
        raise SassError(f"nvdisasm line {lineno} in {cur.name} is neither an instruction, a label nor a "
                        f"directive: {line.strip()[:120]!r}")
    for f in funcs.values():
        if not f.instructions:
            raise SassError(f"function {f.name} has no instructions in the disassembly")
    return funcs


# ---- control flow ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Block:
    index: int
    start: int  # instruction indices [start, end)
    end: int
    succs: tuple[int, ...]


def _never(pred: str | None) -> bool:
    return pred in ("@!PT", "@!UPT")


def _always(pred: str | None) -> bool:
    return pred is None or pred in ("@PT", "@UPT")


def build_cfg(func: Function) -> list[Block]:
    """Basic blocks of ``func`` with their successors (block 0 is the entry)."""
    ins = func.instructions
    n = len(ins)
    leaders = {0}
    targets: dict[int, int] = {}
    for i, x in enumerate(ins):
        if x.base in _INDIRECT or (x.base == "JMP" and x.target is None):
            raise SassError(f"{func.name}: indirect branch at /*{x.offset:04x}*/ ({x.text()}): its targets are "
                            "unknown, so the control-flow graph cannot be built")
        if x.base in ("BRA", "JMP") or x.base in _TERMINATORS or (x.base == "BPT" and "TRAP" in x.opcode):
            if x.base in ("BRA", "JMP"):
                if x.target is None:
                    raise SassError(f"{func.name}: branch without a label target at /*{x.offset:04x}*/: {x.text()}")
                if x.target not in func.labels:
                    raise SassError(f"{func.name}: branch at /*{x.offset:04x}*/ to unknown label {x.target}")
                targets[i] = func.labels[x.target]
                if targets[i] >= n:
                    raise SassError(f"{func.name}: branch at /*{x.offset:04x}*/ past the last instruction")
                leaders.add(targets[i])
            if i + 1 < n:
                leaders.add(i + 1)
    starts = sorted(leaders)
    block_of = {s: b for b, s in enumerate(starts)}
    blocks = []
    for b, s in enumerate(starts):
        e = starts[b + 1] if b + 1 < len(starts) else n
        last = ins[e - 1]
        succ: list[int] = []
        falls = e < n
        if last.base in ("BRA", "JMP"):
            if not _never(last.predicate):
                succ.append(block_of[targets[e - 1]])
            falls = falls and not _always(last.predicate)
        elif last.base in _TERMINATORS or (last.base == "BPT" and "TRAP" in last.opcode):
            falls = falls and not _always(last.predicate)
        if falls:
            succ.append(b + 1)
        blocks.append(Block(b, s, e, tuple(dict.fromkeys(succ))))
    return blocks


def _dominators(blocks: list[Block]) -> list[set[int]]:
    """dom[b] = blocks dominating b (iterative data-flow; unreachable blocks dominate nothing)."""
    preds: list[list[int]] = [[] for _ in blocks]
    for b in blocks:
        for s in b.succs:
            preds[s].append(b.index)
    reach, stack = {0}, [0]
    while stack:
        for s in blocks[stack.pop()].succs:
            if s not in reach:
                reach.add(s)
                stack.append(s)
    dom = [set(reach) if b.index in reach else set() for b in blocks]
    dom[0] = {0}
    changed = True
    while changed:
        changed = False
        for b in sorted(reach - {0}):
            ps = [dom[p] for p in preds[b] if p in reach]
            new = set.intersection(*ps) | {b} if ps else {b}
            if new != dom[b]:
                dom[b], changed = new, True
    return dom


@dataclass(frozen=True)
class Loop:
    header: int                 # block index
    latches: tuple[int, ...]    # blocks with a back edge to the header
    body: frozenset[int]        # blocks of the natural loop (header included)


def find_loops(func: Function, blocks: list[Block] | None = None) -> list[Loop]:
    """Natural loops of ``func``, one per header (back edges u -> h with h dominating u), outermost first.

    A retreating edge to a block that does not dominate its source is irreducible control flow, which the
    model cannot count per iteration: SassError. The compiler's trap loop after EXIT (a lone ``BRA`` to
    itself) is not a loop of the program and is left out.
    """
    blocks = blocks if blocks is not None else build_cfg(func)
    dom = _dominators(blocks)
    preds: list[list[int]] = [[] for _ in blocks]
    for b in blocks:
        for s in b.succs:
            preds[s].append(b.index)
    back: dict[int, list[int]] = {}
    for b in blocks:
        for s in b.succs:
            if dom[b.index] and s in dom[b.index]:
                back.setdefault(s, []).append(b.index)
    _check_reducible(func, blocks, dom)
    loops = []
    for h, latches in back.items():
        body = {h}
        stack = [u for u in latches if u != h]
        body.update(stack)
        while stack:
            for p in preds[stack.pop()]:
                if p not in body:
                    body.add(p)
                    stack.append(p)
        hb = blocks[h]
        if body == {h} and hb.end - hb.start == 1 and func.instructions[hb.start].base == "BRA":
            continue  # trap loop
        loops.append(Loop(h, tuple(sorted(latches)), frozenset(body)))
    return sorted(loops, key=lambda lp: (-len(lp.body), blocks[lp.header].start))


def _check_reducible(func: Function, blocks: list[Block], dom: list[set[int]]) -> None:
    """With every back edge (to a dominator) removed the graph must be acyclic; else SassError."""
    state = [0] * len(blocks)  # 0 new, 1 on the DFS stack, 2 done
    stack = [(0, iter(blocks[0].succs))]
    state[0] = 1
    while stack:
        node, it = stack[-1]
        nxt = next((s for s in it if s not in dom[node]), None)
        if nxt is None:
            state[node] = 2
            stack.pop()
        elif state[nxt] == 1:
            raise SassError(f"{func.name}: irreducible control flow (a cycle entered at /*"
                            f"{func.instructions[blocks[nxt].start].offset:04x}*/ without a dominating header)")
        elif state[nxt] == 0:
            state[nxt] = 1
            stack.append((nxt, iter(blocks[nxt].succs)))


@dataclass(frozen=True)
class LoopStats:
    """One iteration of a loop: the longest header-to-latch path (the steady state: every forward branch that
    skips work is not taken) and the whole static body."""

    header_offset: int
    latch_offsets: tuple[int, ...]
    path_instructions: int
    body_instructions: int
    by_class: dict[str, int]       # along the path
    opcodes: dict[str, int]        # opcode (full, with modifiers) -> count along the path
    global_stream_loads: int       # along the path
    hmma: int                      # along the path


def loop_stats(func: Function, blocks: list[Block], loop: Loop, loops: list[Loop]) -> LoopStats:
    """Count one iteration of an innermost ``loop`` (SassError if another loop is nested inside it)."""
    inner = [lp for lp in loops if lp.header != loop.header and lp.header in loop.body]
    if inner:
        raise SassError(f"{func.name}: loop at /*{func.instructions[blocks[loop.header].start].offset:04x}*/ has "
                        f"{len(inner)} nested loop(s); count only innermost loops")
    ins = func.instructions
    size = {b: blocks[b].end - blocks[b].start for b in loop.body}
    # longest path in the body DAG (edges to the header removed), from the header to a latch
    order, seen = [], set()

    def visit(b: int) -> None:  # iterative post-order
        stack = [(b, iter(blocks[b].succs))]
        seen.add(b)
        while stack:
            node, it = stack[-1]
            nxt = next((s for s in it if s in loop.body and s != loop.header and s not in seen), None)
            if nxt is None:
                order.append(node)
                stack.pop()
            else:
                seen.add(nxt)
                stack.append((nxt, iter(blocks[nxt].succs)))

    visit(loop.header)
    best: dict[int, tuple[int, int | None]] = {}
    for b in reversed(order):  # topological order
        if b == loop.header:
            best[b] = (size[b], None)
        if b not in best:
            continue
        for s in blocks[b].succs:
            if s in loop.body and s != loop.header and best[b][0] + size[s] > best.get(s, (-1, None))[0]:
                best[s] = (best[b][0] + size[s], b)
    end = max((lt for lt in loop.latches if lt in best), key=lambda lt: best[lt][0])
    path, b = [], end
    while b is not None:
        path.append(b)
        b = best[b][1]
    chosen = [ins[i] for blk in reversed(path) for i in range(blocks[blk].start, blocks[blk].end)]
    by_class = Counter({c: 0 for c in CLASSES})
    by_class.update(x.klass for x in chosen)
    return LoopStats(
        header_offset=ins[blocks[loop.header].start].offset,
        latch_offsets=tuple(ins[blocks[lt].end - 1].offset for lt in loop.latches),
        path_instructions=len(chosen),
        body_instructions=sum(size.values()),
        by_class=dict(by_class),
        opcodes=dict(Counter(x.opcode for x in chosen).most_common()),
        global_stream_loads=sum(is_global_stream(x) for x in chosen),
        hmma=sum(x.klass == "hmma" for x in chosen),
    )


def hot_loop(func: Function, accept: Callable[[LoopStats], None] | None = None) -> LoopStats:
    """The main loop of a kernel: among the innermost loops, the one with the most device-memory loads plus
    MMA instructions (ties: the larger body) that ``accept`` (the kernel's description of its main loop,
    raising SassError on a loop that is not it) takes. A kernel's other streaming loops, e.g. the split-K
    reduction whose unrolled partial-sum loads can outnumber the main loop's, are passed over that way
    instead of being counted. SassError when no loop streams or none is accepted (each refusal named)."""
    blocks = build_cfg(func)
    loops = find_loops(func, blocks)
    if not loops:
        raise SassError(f"{func.name}: no loop found (no back-edge branch in {len(func.instructions)} instructions)")
    innermost = [lp for lp in loops if not any(o.header != lp.header and o.header in lp.body for o in loops)]

    def score(lp: Loop) -> tuple[int, int]:
        body = [func.instructions[i] for b in lp.body for i in range(blocks[b].start, blocks[b].end)]
        return sum(is_global_stream(x) or x.klass == "hmma" for x in body), len(body)

    ranked = sorted((lp for lp in innermost if score(lp)[0] > 0), key=score, reverse=True)
    if not ranked:
        raise SassError(f"{func.name}: none of its {len(innermost)} innermost loop(s) loads device memory or "
                        "issues MMA; no hot loop to model")
    refused = []
    for lp in ranked:
        st = loop_stats(func, blocks, lp, loops)
        if accept is None:
            return st
        try:
            accept(st)
        except SassError as exc:
            refused.append(str(exc))
            continue
        return st
    raise SassError(f"{func.name}: none of its {len(ranked)} streaming loop(s) is the main loop: " + " | ".join(refused))


# ---- resources -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Resources:
    registers: int
    static_smem: int     # bytes of static shared memory (ptxas -v), without the per-block reservation
    stack: int
    local: int
    spill_store_bytes: int
    spill_load_bytes: int

    @property
    def spill_bytes(self) -> int:
        return self.spill_store_bytes + self.spill_load_bytes


_RES = re.compile(r"Function (\S+):\s*\n\s*REG:(\d+) STACK:(\d+) SHARED:\d+ LOCAL:(\d+)")
_PTXAS_ENTRY = re.compile(r"Compiling entry function '(\S+)' for '(\w+)'")
_SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_SMEM = re.compile(r"Used \d+ registers.*?(?:(\d+) bytes smem|$)", re.M)


def parse_resources(res_usage: str, ptxas_log: str) -> dict[str, Resources]:
    """Per mangled kernel name: registers/stack/local (``cuobjdump -res-usage``), static shared memory and
    spills (``ptxas -v``: cuobjdump's SHARED includes the 1 KB per-block reservation on sm_90 but not on
    sm_80, so the occupancy code adds that reservation itself, uniformly)."""
    ptx: dict[str, tuple[int, int, int]] = {}
    entries = list(_PTXAS_ENTRY.finditer(ptxas_log))
    for i, m in enumerate(entries):
        chunk = ptxas_log[m.end(): entries[i + 1].start() if i + 1 < len(entries) else len(ptxas_log)]
        sp, sm = _SPILL.search(chunk), _SMEM.search(chunk)
        if sp is None or sm is None:
            raise SassError(f"ptxas -v log has no spill/register line for {m.group(1)}; compile with -Xptxas -v")
        ptx[m.group(1)] = (int(sm.group(1) or 0), int(sp.group(2)), int(sp.group(3)))
    out = {}
    for m in _RES.finditer(res_usage):
        name = m.group(1)
        if name not in ptx:
            raise SassError(f"ptxas -v log has no entry for {name}; compile with -Xptxas -v")
        smem, st, ld = ptx[name]
        out[name] = Resources(int(m.group(2)), smem, int(m.group(3)), int(m.group(4)), st, ld)
    return out


__all__ = ["CLASSES", "Block", "Function", "Instruction", "Loop", "LoopStats", "Resources", "SassError",
           "build_cfg", "classify", "find_loops", "hot_loop", "is_global_stream", "loop_stats", "parse_functions",
           "parse_resources"]
