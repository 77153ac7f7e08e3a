"""Ray Job entry point: the same pipeline as ``rayline run``, submitted to a cluster.

    ray job submit --working-dir . -- python jobs/train_pipeline.py \
        --config jobs/configs/demo.yaml train.num_workers=4 train.use_gpu=true
"""

from __future__ import annotations

import argparse
import logging
import sys

from rayline.config import load_config
from rayline.errors import Interrupted, RaylineError, find_user_error, internal_error_text
from rayline.pipeline import run_pipeline
from rayline.progress import console
from rayline.summary import format_summary


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the pipeline, print the summary; exit as ``rayline run`` does.

    0 done, 2 a user error, 3 rejected with ``--fail-on-reject``, 130 interrupted, 1 an
    internal error (one line; the traceback with ``--verbose``).

    The output is ``rayline run``'s: a line per stage start and end, epochs and sweep
    progress live, the summary; Ray's own output goes to ``<run_dir>/ray.log`` unless
    ``--verbose``.
    """
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", required=True, help="pipeline YAML config")
    parser.add_argument("--fail-on-reject", action="store_true", help="exit 3 if the gate rejects")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show Ray's, Tune's and MLflow's output"
    )
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    args = parser.parse_args(argv)
    try:
        with console(args.verbose) as con:
            cfg = load_config(args.config, args.overrides)
            if args.verbose:
                cfg.runtime.log_to_driver = True
                logging.getLogger("rayline").info("resolved config:\n%s", cfg.to_yaml())
            result = run_pipeline(cfg, on_stage=con.stage_done, on_stage_start=con.stage_started)
            print(format_summary(result, cfg.registry.alias), file=con.out)
            if con.log_path:
                print(f"ray logs: {con.log_path}", file=con.out)
    except (Interrupted, KeyboardInterrupt) as exc:
        print(
            f"interrupted: {str(exc) or 'the run stopped before it finished'}; submit it "
            "again with the same runtime.run_name to resume",
            file=sys.stderr,
        )
        return 130
    except RaylineError as exc:  # a Ray-wrapped one prints its own message, not Ray's
        print(f"error: {find_user_error(exc) or exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        found = find_user_error(exc)  # a rayline error wrapped by Ray (RayTaskError)
        if found is not None:
            print(f"error: {found}", file=sys.stderr)
            return 2
        if args.verbose:
            raise
        print(internal_error_text(exc), file=sys.stderr)
        return 1
    if args.fail_on_reject and result.gate and not result.gate["passed"]:
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
