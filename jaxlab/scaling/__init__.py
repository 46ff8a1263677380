"""Scaling laws as data, their robust fits, run-table loading, plots and reports.

Laws: `ChinchillaLaw` (HOFFMANN_2022, BESIROGLU_2024), `KaplanLaw`, `SaturatingPowerLaw`,
`PowerLaw`, `AverageParamLaw`, `FrantarSparseLaw` (FRANTAR_T5, FRANTAR_VIT).
Fits: `fit_chinchilla` (Besiroglu's 4,500-start Huber fit, vectorised), `fit_kaplan`,
`fit_frantar`, `fit_saturating_power_law`, `fit_power_law_in_compute`, `fit_isoflop`,
`fit_critical_batch`, `fit_tau_law`. Results: `load_runs`, `load_metrics`.
CLI: `python -m jaxlab.scaling fit --runs DIR... --law chinchilla --out DIR`.
"""
from jaxlab.scaling.chinchilla_fit import (
                                           bootstrap_chinchilla,
                                           fit_average_param_law,
                                           fit_chinchilla,
                                           fit_chinchilla_scipy,
)
from jaxlab.scaling.critical_batch import CriticalBatchLaw, fit_critical_batch, steps_to_target
from jaxlab.scaling.isoflop import fit_isoflop
from jaxlab.scaling.kaplan_fit import fit_kaplan
from jaxlab.scaling.laws import (
                                           BESIROGLU_2024,
                                           HOFFMANN_2022,
                                           KAPLAN_2020,
                                           MOONLIGHT_ADAMW,
                                           MOONLIGHT_MUON,
                                           POWER_LINES_BATCH,
                                           POWER_LINES_TAU,
                                           AverageParamLaw,
                                           ChinchillaLaw,
                                           KaplanLaw,
                                           PowerLaw,
                                           SaturatingPowerLaw,
)
from jaxlab.scaling.power_law_fit import (
                                           fit_power_law_in_compute,
                                           fit_pure_power_law,
                                           fit_saturating_power_law,
)
from jaxlab.scaling.report import optimizer_comparison, write_fit_report
from jaxlab.scaling.results import load_metrics, load_runs, summaries_to_frame
from jaxlab.scaling.sparse_law import FRANTAR_T5, FRANTAR_VIT, FrantarSparseLaw, fit_frantar
from jaxlab.scaling.speedup import compute_ratio_at_equal_loss, effective_data_speedup
from jaxlab.scaling.weight_decay_fit import fit_tau_law, tau_opt_from_sweep, timescale

__all__ = [
                                           "BESIROGLU_2024",
                                           "FRANTAR_T5",
                                           "FRANTAR_VIT",
                                           "HOFFMANN_2022",
                                           "KAPLAN_2020",
                                           "MOONLIGHT_ADAMW",
                                           "MOONLIGHT_MUON",
                                           "POWER_LINES_BATCH",
                                           "POWER_LINES_TAU",
                                           "AverageParamLaw",
                                           "ChinchillaLaw",
                                           "CriticalBatchLaw",
                                           "FrantarSparseLaw",
                                           "KaplanLaw",
                                           "PowerLaw",
                                           "SaturatingPowerLaw",
                                           "bootstrap_chinchilla",
                                           "compute_ratio_at_equal_loss",
                                           "effective_data_speedup",
                                           "fit_average_param_law",
                                           "fit_chinchilla",
                                           "fit_chinchilla_scipy",
                                           "fit_critical_batch",
                                           "fit_frantar",
                                           "fit_isoflop",
                                           "fit_kaplan",
                                           "fit_power_law_in_compute",
                                           "fit_pure_power_law",
                                           "fit_saturating_power_law",
                                           "fit_tau_law",
                                           "load_metrics",
                                           "load_runs",
                                           "optimizer_comparison",
                                           "steps_to_target",
                                           "summaries_to_frame",
                                           "tau_opt_from_sweep",
                                           "timescale",
                                           "write_fit_report",
]
