"""Two real jax processes on this machine (CPU devices, gloo collectives): what a test needs
where one process with 8 devices would address every device and hide multi-host behaviour."""
import os
import subprocess
import sys

import cpu_devices

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(script_text: str, folder, coordinator_port: int, devices_per_process: int) -> list:
  """Runs `script_text` as processes 0 and 1, each called with the coordinator's address, its
  index and the file it writes its result to (not stdout: gloo writes there too). Returns each
  process's (return code, the end of its stderr, its result text or None)."""
  script = folder / "child.py"
  script.write_text(script_text)
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
         "XLA_FLAGS": cpu_devices.xla_flags(devices_per_process),
         "PYTHONPATH": REPO}
  results = [folder / f"host{index}.txt" for index in range(2)]
  children = [subprocess.Popen([sys.executable, str(script), f"localhost:{coordinator_port}",
                                str(index), str(results[index])], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
              for index in range(2)]
  try:
    errors = [child.communicate(timeout=300)[1] for child in children]
  finally:  # a hung child must not outlive the test holding the coordinator's port
    for child in children:
      if child.poll() is None:
        child.kill()
  return [(child.returncode, error[-3000:], result.read_text() if result.exists() else None)
          for child, error, result in zip(children, errors, results)]
