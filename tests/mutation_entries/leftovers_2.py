"""Planted bugs in session 47's work: what session 46 left (apt's lock on a new TPU VM)."""
from mutation_entries import Mutation

_APT = ("tests/test_launch_tpu_setup.py::test_setup_on_a_new_vm_waits_while_its_first_upgrade_"
        "holds_apt_s_lock",)

ENTRIES = (
    Mutation("setup's apt-get is tried once", "launch/tpu_remote.py",
             '  return (f"apt_get() {{ for try in $(seq {APT_TRIES}); do sudo apt-get -o "',
             '  return (f"apt_get() {{ for try in $(seq 1); do sudo apt-get -o "', _APT),
    Mutation("setup installs Python with a bare apt-get again", "launch/tpu_remote.py",
             'f"if ! command -v {python} >/dev/null; then apt_get update -qq; "',
             'f"if ! command -v {python} >/dev/null; then sudo apt-get update -qq; "', _APT),
    Mutation("apt_get succeeds after its last failed try", "launch/tpu_remote.py",
             "f'times\" >&2; return 1; }}')", "f'times\" >&2; return 0; }}')",
             ("tests/test_launch_tpu_setup.py::test_setup_stops_with_the_apt_command_named_when_"
              "the_lock_is_never_released",)),
)
