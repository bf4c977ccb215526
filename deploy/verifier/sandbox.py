"""The verification sandbox's entry point (docs: shared spec verification.md section 2.3).

Runs inside the verifier image (`kinitro env build verifier`), one container per verification, with
no network, a read-only root, a tmpfs /tmp and tight limits. Python 3 standard library and NumPy
only (pydantic is in the image for the miner's own `rl_interface.py`, not for this file).

Protocol:
  stdin   a tar stream: `policy/...` (the miner's snapshot at the committed revision) and
          `samples.json` = {"seeds": [int, ...], "observations": [<observation>, ...]}
          (observations in the miner-protocol shape: rgb, depth, proprio, cam_intrinsics,
          cam_extrinsics, extra).
  stdout  exactly one JSON line:
            {"status": "ok", "actions": [[float, ...] | null, ...], "errors": [str | null, ...]}
          or
            {"status": "error", "kind": KIND, "error": MESSAGE}
          with KIND one of
            no_policy_file   the snapshot has no policy.py
            no_policy_class  policy.py defines no RobotPolicy
            missing_module   a module the policy imports is not installed in this image
            exception        policy.py or RobotPolicy() raised
            too_large        the snapshot does not fit the scratch space
            bad_input        the input stream is not what the executor sends
            internal         this program failed
  exit    0 whenever a line was written; anything else means the sandbox crashed or was killed.

While miner code runs, file descriptor 1 and `sys.stdout` point at stderr, so nothing the miner
prints can corrupt the result line; the result goes to a private duplicate of the original stdout.
Before sample i, Python's `random` and NumPy's global generator are seeded with seeds[i].
"""

import asyncio
import errno
import importlib
import importlib.util
import json
import os
import random
import sys
import tarfile
import tempfile
import traceback

# Bounds on what this program accepts and reports.
MAX_SAMPLES_JSON = 64 << 20
MAX_MESSAGE = 2000
MAX_TRACEBACK = 1500
MAX_ACTION_VALUES = 4096

MAIN_PID = os.getpid()


class Failure(Exception):
    """A verification that ends with an error result of the given kind."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind
        self.message = clip(message, MAX_MESSAGE + MAX_TRACEBACK)


def clip(text, limit):
    """`text`, cut to its last `limit` characters when longer (tails say most about errors)."""
    text = str(text)
    return text if len(text) <= limit else "..." + text[-limit:]


def describe(exc):
    """`Type: message` of an exception, bounded."""
    message = str(exc)
    name = type(exc).__name__
    return clip(f"{name}: {message}" if message else name, MAX_MESSAGE)


def only_main_process():
    """A process forked by miner code that comes back into this program ends here, silently."""
    if os.getpid() != MAIN_PID:
        os._exit(0)


# --------------------------------------------------------------------------------------------
# Input


def safe_parts(name):
    """The path components of a tar member name, or None when the name is unsafe."""
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        return None
    return parts


def read_member(tar, member, limit):
    """The bytes of a regular member, refusing more than `limit`."""
    if member.size > limit:
        raise Failure("bad_input", f"{member.name} is larger than {limit} bytes")
    handle = tar.extractfile(member)
    return handle.read() if handle is not None else b""


def write_member(tar, member, dest):
    """Copies a regular member to `dest` (a new file; never through a link)."""
    handle = tar.extractfile(member)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(dest, flags, 0o644)
    try:
        while handle is not None:
            chunk = handle.read(1 << 20)
            if not chunk:
                break
            view = memoryview(chunk)
            while view:
                written = os.write(fd, view)
                view = view[written:]
    finally:
        os.close(fd)


def unpack(stream, policy_dir):
    """Unpacks the input tar: the snapshot under `policy_dir`; returns samples.json's bytes."""
    samples = None
    try:
        tar = tarfile.open(fileobj=stream, mode="r|")
    except tarfile.TarError as exc:
        raise Failure("bad_input", f"the input is not a tar stream: {exc}") from exc
    try:
        for member in tar:
            parts = safe_parts(member.name)
            if parts is None:
                raise Failure("bad_input", f"unsafe path in the input: {member.name!r}")
            if parts == ["samples.json"] and member.isreg():
                samples = read_member(tar, member, MAX_SAMPLES_JSON)
                continue
            if parts[0] != "policy":
                raise Failure("bad_input", f"unexpected entry in the input: {member.name!r}")
            dest = os.path.join(policy_dir, *parts[1:])
            if member.isdir():
                os.makedirs(dest, mode=0o755, exist_ok=True)
            elif member.isreg() and len(parts) > 1:
                os.makedirs(os.path.dirname(dest), mode=0o755, exist_ok=True)
                write_member(tar, member, dest)
            else:
                raise Failure(
                    "bad_input",
                    f"{member.name!r} is not a regular file or directory (links and devices are refused)",
                )
    except tarfile.TarError as exc:
        raise Failure("bad_input", f"unreadable input tar: {exc}") from exc
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise Failure(
                "too_large", "the snapshot does not fit the sandbox's scratch space"
            ) from exc
        if exc.errno == errno.EEXIST:
            raise Failure("bad_input", f"duplicate entry in the input: {exc.filename}") from exc
        raise
    if samples is None:
        raise Failure("bad_input", "the input has no samples.json")
    return samples


def parse_samples(raw):
    """(seeds, observations) of samples.json."""
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise Failure("bad_input", f"samples.json is not JSON: {exc}") from exc
    seeds = doc.get("seeds") if isinstance(doc, dict) else None
    observations = doc.get("observations") if isinstance(doc, dict) else None
    if (
        not isinstance(seeds, list)
        or not isinstance(observations, list)
        or len(seeds) != len(observations)
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
        or not all(isinstance(o, dict) for o in observations)
    ):
        raise Failure(
            "bad_input",
            "samples.json must hold equally long lists 'seeds' (non-negative integers) and "
            "'observations' (objects)",
        )
    return seeds, observations


# --------------------------------------------------------------------------------------------
# The policy


def missing_module(exc, policy_dir):
    """The missing module's name when `exc` says a module is not installed in this image; None when
    it is the snapshot's own module that is missing or broken."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    top = exc.name.split(".")[0]
    if os.path.exists(os.path.join(policy_dir, top)) or os.path.exists(
        os.path.join(policy_dir, top + ".py")
    ):
        return None
    return exc.name


def classify(exc, doing, policy_dir):
    """The failure of miner code raising `exc` while `doing`."""
    name = missing_module(exc, policy_dir)
    if name is not None:
        return Failure(
            "missing_module",
            f"module '{name}' is not installed in the verifier image ({doing}: {describe(exc)})",
        )
    tail = clip("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)), MAX_TRACEBACK)
    return Failure("exception", f"{doing}: {describe(exc)}\n{tail}")


def load_policy(policy_dir):
    """Imports policy.py as upstream did and returns a RobotPolicy instance."""
    policy_file = os.path.join(policy_dir, "policy.py")
    if not os.path.isfile(policy_file):
        raise Failure("no_policy_file", "policy.py not found in the repository snapshot")
    # The snapshot's folder first on sys.path (its own modules, such as rl_interface), and as the
    # working directory (relative weight paths), as a miner's server runs it.
    sys.path.insert(0, policy_dir)
    os.chdir(policy_dir)
    spec = importlib.util.spec_from_file_location("miner_policy", policy_file)
    if spec is None or spec.loader is None:
        raise Failure("exception", "policy.py cannot be loaded as a module")
    module = importlib.util.module_from_spec(spec)
    sys.modules["miner_policy"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:  # noqa: BLE001 - miner code may raise anything, SystemExit too
        only_main_process()
        raise classify(exc, "importing policy.py", policy_dir) from None
    only_main_process()
    cls = getattr(module, "RobotPolicy", None)
    if cls is None:
        raise Failure("no_policy_class", "RobotPolicy class not found in policy.py")
    try:
        policy = cls()
    except BaseException as exc:  # noqa: BLE001
        only_main_process()
        raise classify(exc, "instantiating RobotPolicy", policy_dir) from None
    only_main_process()
    return policy


class SandboxObservation:
    """The observation handed to a policy whose snapshot brings no pydantic `Observation` of its
    own: the miner-protocol fields as attributes, and the helpers policies commonly call."""

    FIELDS = ("rgb", "depth", "proprio", "cam_intrinsics", "cam_extrinsics", "extra")

    def __init__(self, data):
        for field in self.FIELDS:
            value = data.get(field)
            setattr(self, field, dict(value) if isinstance(value, dict) else {})

    def get_proprio(self, key):
        """One proprioceptive channel as float32, or None."""
        import numpy as np

        if key not in self.proprio:
            return None
        return np.asarray(self.proprio[key], dtype=np.float32)

    def proprio_array(self, keys=None):
        """The channels named by `keys` (default: all, sorted by name) concatenated as float32."""
        import numpy as np

        names = sorted(self.proprio) if keys is None else keys
        chunks = [np.asarray(self.proprio[k], dtype=np.float64).ravel() for k in names if k in self.proprio]
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32)

    @staticmethod
    def _decode(encoded):
        import base64

        import numpy as np

        raw = base64.b64decode(encoded["data"])
        return np.frombuffer(raw, dtype=np.dtype(encoded["dtype"])).reshape(tuple(encoded["shape"]))

    def get_image(self, camera):
        """One decoded RGB image, or None."""
        return self._decode(self.rgb[camera]) if camera in self.rgb else None

    def get_depth(self, camera):
        """One decoded depth image, or None."""
        return self._decode(self.depth[camera]) if camera in self.depth else None

    @property
    def images(self):
        """Every RGB image, decoded."""
        return {name: self._decode(data) for name, data in self.rgb.items()}

    def model_dump(self, mode="python"):
        """The observation as a plain dictionary."""
        del mode
        return {field: getattr(self, field) for field in self.FIELDS}

    def to_payload(self, include_images=True):
        """The observation as sent over the network."""
        data = self.model_dump()
        if not include_images:
            data["rgb"] = {}
            data["depth"] = {}
        return data



def observation_factory(policy_dir):
    """Builds observations: the snapshot's own pydantic `rl_interface.Observation` when it has one
    (as a miner's server would), else [`SandboxObservation`]."""
    model = None
    if os.path.isfile(os.path.join(policy_dir, "rl_interface.py")):
        module = sys.modules.get("rl_interface")
        if module is None:
            try:
                module = importlib.import_module("rl_interface")
            except BaseException as exc:  # noqa: BLE001 - SystemExit too: miner code
                print(f"kinitro-sandbox: rl_interface.py does not import ({describe(exc)}); "
                      "using the built-in observation", file=sys.stderr)
            only_main_process()
        candidate = getattr(module, "Observation", None) if module is not None else None
        if candidate is not None and callable(getattr(candidate, "model_validate", None)):
            model = candidate

    def make(data):
        if model is not None:
            try:
                return model.model_validate(data)
            except BaseException as exc:  # noqa: BLE001 - miner code may raise anything
                print(f"kinitro-sandbox: rl_interface.Observation rejects the sample "
                      f"({describe(exc)}); using the built-in observation", file=sys.stderr)
        return SandboxObservation(data)

    return make


def flatten(action):
    """The action as one float32 vector, as upstream's verifier flattened it."""
    import numpy as np

    if hasattr(action, "to_array"):
        values = action.to_array()
    elif hasattr(action, "continuous_array"):
        values = action.continuous_array()
    elif isinstance(action, dict):
        unknown = sorted(set(action) - {"continuous", "discrete", "extra"})
        if unknown:
            raise ValueError(f"the action has unknown fields {unknown}")
        continuous = action.get("continuous", {})
        if not isinstance(continuous, dict):
            raise ValueError("the action's 'continuous' is not a mapping")
        chunks = []
        for key in sorted(continuous):
            chunk = np.asarray(continuous[key], dtype=np.float32)
            if chunk.ndim != 1:
                raise ValueError(f"the action's channel {key!r} is not a list of numbers")
            chunks.append(chunk)
        values = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    else:
        values = action
        for method in ("detach", "cpu", "numpy"):
            if hasattr(values, method) and callable(getattr(values, method)):
                values = getattr(values, method)()
    array = np.asarray(values, dtype=np.float32).ravel()
    if array.size > MAX_ACTION_VALUES:
        raise ValueError(f"the action has {array.size} values (at most {MAX_ACTION_VALUES})")
    if not np.all(np.isfinite(array)):
        raise ValueError("the action contains non-finite values")
    return [float(v) for v in array]


def run_samples(policy, policy_dir, seeds, observations):
    """One action (or error) per sample."""
    import numpy as np

    make = observation_factory(policy_dir)
    loop = asyncio.new_event_loop()
    actions, errors, missing = [], [], []
    act = getattr(policy, "act", None)
    for seed, data in zip(seeds, observations):
        random.seed(seed)
        np.random.seed(seed % (1 << 32))
        try:
            if act is None:
                raise AttributeError("RobotPolicy has no act method")
            obs = make(data)
            if asyncio.iscoroutinefunction(act):
                action = loop.run_until_complete(act(obs))
            else:
                action = act(obs)
                if hasattr(action, "__await__"):
                    action = loop.run_until_complete(action)
            only_main_process()
            actions.append(flatten(action))
            errors.append(None)
        except BaseException as exc:  # noqa: BLE001
            only_main_process()
            name = missing_module(exc, policy_dir)
            if name is not None:
                missing.append(name)
            actions.append(None)
            errors.append(describe(exc))
    if missing:
        raise Failure(
            "missing_module",
            f"module '{missing[0]}' is not installed in the verifier image (raised by act)",
        )
    return {"status": "ok", "actions": actions, "errors": errors}


# --------------------------------------------------------------------------------------------


def run(stdin):
    """The whole verification; returns the result document."""
    try:
        import numpy  # noqa: F401 - the image must have it before any miner code runs
    except ImportError as exc:
        raise Failure("internal", f"NumPy is missing from the verifier image: {exc}") from exc
    work = tempfile.mkdtemp(prefix="kinitro-verify-", dir="/tmp" if os.path.isdir("/tmp") else None)
    policy_dir = os.path.join(work, "policy")
    os.mkdir(policy_dir, 0o755)
    samples = unpack(stdin, policy_dir)
    # Miner code reads nothing of ours: stdin is empty from here on.
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    seeds, observations = parse_samples(samples)
    policy = load_policy(policy_dir)
    return run_samples(policy, policy_dir, seeds, observations)


def main():
    # The result's private channel; fd 1 (and sys.stdout) become stderr for everything else.
    result_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    stdin = getattr(sys.stdin.buffer, "raw", None) or os.fdopen(0, "rb", buffering=0)
    try:
        result = run(stdin)
    except Failure as failure:
        result = {"status": "error", "kind": failure.kind, "error": failure.message}
    except BaseException as exc:  # noqa: BLE001
        only_main_process()
        tail = clip("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)), MAX_TRACEBACK)
        result = {"status": "error", "kind": "internal", "error": f"{describe(exc)}\n{tail}"}
    only_main_process()
    try:
        line = json.dumps(result, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        line = json.dumps({"status": "error", "kind": "internal", "error": describe(exc)}) + "\n"
    data = memoryview(line.encode("utf-8"))
    try:
        sys.stderr.flush()
    except Exception:  # noqa: BLE001
        pass
    while data:
        data = data[os.write(result_fd, data):]
    # Threads or handlers the miner left behind do not keep the sandbox alive.
    os._exit(0)


if __name__ == "__main__":
    main()
