"""Steps of the pipeline: subprocesses of the scripts in ``tools/``, each
reused when an identical earlier run left its outputs.

A step that finished writes its marker ``<marker_dir>/<name>.json``: its
command, the runs of the steps it read (``upstream``), a fresh run id and
its duration. It is reused when the command and those upstream runs are
the same as in its marker and its outputs exist; a step that re-runs gets
a new run id, so the steps reading its outputs re-run too.
"""
import json
import os
import os.path as osp
import subprocess
import sys
import time
import uuid
from typing import List, Sequence

# The repository: the parent of the protoprompt_mm package, holding tools/.
REPO_ROOT = osp.dirname(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


class PipelineError(RuntimeError):
    """A step failed; the message names it."""


def tool_command(script: str, *args: str) -> List[str]:
    """The command line of ``tools/<script>`` with this interpreter.

    Raises:
        PipelineError: If the script is not there (the package was
            installed as a copy instead of used from its checkout).
    """
    path = osp.join(REPO_ROOT, 'tools', script)
    if not osp.isfile(path):
        raise PipelineError(
            f'{path} not found: the pipeline runs the scripts of tools/ '
            'next to the protoprompt_mm package, so it needs the package '
            'from its repository checkout (pip install -e .)')
    return [sys.executable, path, *args]


class StepRunner:
    """Runs the steps of one work dir and keeps their markers.

    Args:
        marker_dir: Folder of the markers (created).
    """

    def __init__(self, marker_dir: str) -> None:
        self.marker_dir = marker_dir
        os.makedirs(marker_dir, exist_ok=True)

    def marker_path(self, name: str) -> str:
        """The marker file of step ``name``."""
        return osp.join(self.marker_dir, f'{name}.json')

    def read_marker(self, name: str) -> dict:
        """Step ``name``'s marker; empty if it never finished."""
        marker = self.marker_path(name)
        if not osp.isfile(marker):
            return {}
        with open(marker) as f:
            return json.load(f)

    def run_step(self,
                 name: str,
                 cmd: List[str],
                 outputs: List[str],
                 after: Sequence[str] = ()) -> None:
        """Run ``cmd`` unless an earlier identical run left its outputs.

        The command runs in the repository root with the repository first
        on ``PYTHONPATH``.

        Args:
            name: Step name (marker ``<marker_dir>/<name>.json``).
            cmd: The command.
            outputs: Paths the step must write.
            after: Steps whose outputs this one reads: it is reused only if
                they are the same runs as when it last ran.

        Raises:
            PipelineError: If the command fails or leaves an output
                unwritten.
        """
        upstream = {step: self.read_marker(step).get('run') for step in after}
        marker = self.read_marker(name)
        if marker.get('cmd') == cmd and marker.get(
                'upstream') == upstream and all(
                    osp.exists(p) for p in outputs):
            print(f'[pipeline] {name}: reusing {outputs[0]}', flush=True)
            return
        print(f'[pipeline] {name}: {" ".join(cmd)}', flush=True)
        start = time.time()
        env = dict(os.environ)
        env['PYTHONPATH'] = os.pathsep.join(
            [REPO_ROOT] + [p for p in [env.get('PYTHONPATH')] if p])
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env)
        if proc.returncode != 0:
            raise PipelineError(
                f'step "{name}" failed with exit code {proc.returncode}: '
                f'{" ".join(cmd)}')
        missing = [p for p in outputs if not osp.exists(p)]
        if missing:
            raise PipelineError(
                f'step "{name}" finished but did not write {missing}')
        with open(self.marker_path(name), 'w') as f:
            json.dump(
                dict(
                    cmd=cmd,
                    upstream=upstream,
                    run=uuid.uuid4().hex,
                    seconds=round(time.time() - start, 1)), f)
