"""The XLA flags of this suite's CPU processes: its own (conftest) and those its tests start."""
import importlib.metadata


def xla_flags(devices: int, others: str = "") -> str:
  """`devices` simulated CPU devices, and XLA:CPU's older loop emitters where jaxlib has them,
  after `others` (flags of the environment) less any that set one of these, so that each is
  given once (pytest-xdist's workers inherit the flags conftest gave the controller).
  jaxlib 0.10's XLA emits fused loops through its newer MLIR emitters unless told otherwise;
  its older ones compile this suite's small programs in about two thirds of the time and run
  them as fast (docs/performance.md, "The suite compiles with XLA:CPU's older loop emitters").
  jaxlib 0.11's XLA has only the newer ones and aborts on the flag ("Unknown flag in
  XLA_FLAGS"), so it goes to older jaxlibs only (requirements.txt: 0.10 or newer)."""
  flags = [f"--xla_force_host_platform_device_count={devices}"]
  major, minor = (int(part) for part in importlib.metadata.version("jaxlib").split(".")[:2])
  if (major, minor) < (0, 11):
    flags.append("--xla_cpu_use_fusion_emitters=false")
  set_here = tuple(flag.split("=")[0] for flag in flags)
  kept = [flag for flag in others.split() if not flag.startswith(set_here)]
  return " ".join(kept + flags)
