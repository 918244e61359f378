"""``kefu eval …``: the Typer app; its commands live in report_cli, calibrate_cli and datasets_cli."""

from __future__ import annotations

import typer

from eval.calibrate_cli import calibrate_cmd
from eval.datasets_cli import beir_cmd, suite_cmd, traffic_cmd
from eval.report_cli import confusions_cmd, report_cmd, run_cmd

eval_app = typer.Typer(help="Offline evaluation, calibration and reports.", no_args_is_help=True)

eval_app.command("run")(run_cmd)
eval_app.command("calibrate")(calibrate_cmd)
eval_app.command("confusions")(confusions_cmd)
eval_app.command("report")(report_cmd)
eval_app.command("beir")(beir_cmd)
eval_app.command("suite")(suite_cmd)
eval_app.command("traffic")(traffic_cmd)
