# Setup with side effects, done once when the Snakefile loads: the config checked beyond its schema,
# container images checked, the environment rules run in, and every command's code fingerprint.

import os
import sys

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake_interface_executor_plugins.settings import DeploymentMethod

# the checkout: workflow/Snakefile's parent (the catalog's layout), where lorarank, config/ and envs/ are
ROOT = os.path.dirname(workflow.basedir)
sys.path.insert(0, ROOT)  # lorarank's workflow-facing modules import nothing but the standard library
from lorarank import workflow_config
from lorarank.training import regimes
from lorarank.study import ALPHA_POLICIES
from lorarank.provenance.containers import COMMAND_ENV, binds, env_paths, passed_env, references, stale
from lorarank.errors import UserError
from lorarank.provenance.fingerprint import fingerprints

# The schema (one line naming the key), its defaults filled in, then cross-field mistakes (random.low > high,
# manual ranks of the wrong length, ...): all fail here, in one line, before any job is planned
# (workflow_config.load: the commands' own checks, run on the config).
SCHEMA = f"{workflow.basedir}/schemas/config.schema.yaml"
try:
    workflow_config.load(config, SCHEMA)
except UserError as e:
    raise WorkflowError(f"config: {e}") from None

# Container images by digest, one per environment (config `containers:`); used with --sdm apptainer
# (the slurm profile sets it), and then required: an unset image would silently mean the host.
APPTAINER = DeploymentMethod.APPTAINER in workflow.deployment_settings.deployment_method
try:
    CONTAINERS = references(config["containers"], required=APPTAINER)
except ValueError as e:
    raise WorkflowError(str(e)) from None
if APPTAINER:
    for warning in stale(ROOT, CONTAINERS):
        logger.warning(warning)


# Rules run `python -m lorarank` with this checkout's code, also in the images (which do not install
# lorarank, so that a code edit needs no rebuild) and from another working directory: the code the
# fingerprints below hash is the code that runs. Apptainer binds the working directory, not this one.
def _prepend(var, path, sep):
    parts = [p for p in os.environ.get(var, "").split(sep) if p]
    os.environ[var] = sep.join([path] + [p for p in parts if p != path])


def _append(var, path, sep):
    """`path` at the end of a list variable, unless it is there (a Slurm job reads the Snakefile again, with the
    submit host's values exported into it)."""
    parts = [p for p in os.environ.get(var, "").split(sep) if p]
    os.environ[var] = sep.join(parts + [path] * (path not in parts))


_prepend("PYTHONPATH", ROOT, os.pathsep)
if not APPTAINER:
    # `python` in a rule is the Python that runs Snakemake (the project's .venv, by `make run`), found
    # without the user activating anything; in an image, the image's own
    _prepend("PATH", os.path.dirname(sys.executable), os.pathsep)
if APPTAINER:
    # What a job in an image sees: the checkout; the local inputs outside it and the working directory
    # (data.path, a local model, a DeepSpeed config), each bound or refused here in one line; and the host
    # paths the variables it is passed name (containers.PATH_ENV). Appended after the user's own binds and
    # the checkout: Apptainer mounts in order, and a later mount would cover an earlier one inside it.
    try:
        specs = binds(workflow_config.local_paths(config), [ROOT, os.getcwd()])
    except ValueError as e:
        raise WorkflowError(f"config: {e}") from None
    try:
        specs += binds({f"${k}": v for k, v in env_paths(os.environ).items()}, [ROOT, os.getcwd()])
    except ValueError as e:
        raise WorkflowError(f"environment: {e}") from None
    for spec in [ROOT, *specs]:
        _append("APPTAINER_BIND", spec, ",")
    # inside an image, this checkout alone: host entries would shadow the image's pinned packages; and under
    # the profile's --cleanenv, the host variables a job needs, by name (containers.PASSED_ENV). A GPU list
    # from the submit host (exported into every Slurm job) must not reach a job Slurm gave no GPU.
    if "CUDA_VISIBLE_DEVICES" not in os.environ:
        os.environ.pop("APPTAINERENV_CUDA_VISIBLE_DEVICES", None)
    os.environ.update(APPTAINERENV_PYTHONPATH=ROOT, **passed_env(os.environ))

# Each rule's params carry its command's code fingerprint (import closure, code without comments
# or docstrings, versions of the packages it imports, or in a container the image digest instead):
# Snakemake's params trigger then reruns a stage when, and only when, what it executes changed.
# See lorarank/provenance/fingerprint.py.
CODE = fingerprints(ROOT, {c: CONTAINERS[COMMAND_ENV[c]] for c in COMMAND_ENV if APPTAINER})
