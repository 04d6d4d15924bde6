"""The columns of each asset's rows, for the UI's Columns tab (`dagster/column_schema`).

Units are in the descriptions; prices and costs are in the site's currency.
"""

import dagster as dg

from dispatch_pipeline.core.result import BINDING_NAMES

INTERVAL_START = dg.TableColumn("ts", "timestamp", "Start of the interval, UTC (the site's local day).")


def _schema(*columns: tuple[str, str, str]) -> dict[str, dg.TableSchema]:
    return {"dagster/column_schema": dg.TableSchema([INTERVAL_START, *(dg.TableColumn(*c) for c in columns)])}


SITE_FORECAST = _schema(
    ("load_kw", "float", "Site load forecast, kW (mean over the interval)."),
    ("pv_kw", "float", "PV generation forecast, kW (mean over the interval)."),
    ("issued_at", "timestamp", "When the forecast used for this interval was issued (the latest issue wins)."),
    ("stored_at", "timestamp", "When that forecast row was written (loaded, or overwritten under the same issue time)."),
)

SITE_TARIFF = _schema(
    ("buy", "float", "Import price, currency per kWh."),
    ("sell", "float", "Export price, currency per kWh (may be negative)."),
    ("source", "string", "price_series (a stored series) or tou_tariff (the site's time-of-use tariff)."),
    ("demand_charge_per_kw", "float", "The charge on the day's peak import of the tariff in force that day, currency per kW."),
    ("issued_at", "timestamp", "When the price series used for this interval was issued; null for tou_tariff."),
    ("stored_at", "timestamp", "When that price row was written; null for tou_tariff."),
    ("site_updated_at", "timestamp", "When the site's registration the day was priced with last changed (sites.updated_at)."),
)

DISPATCH_SCHEDULE = _schema(
    ("pv_set_kw", "float", "PV used, kW."),
    ("batt_ch_kw", "float", "Battery charging, kW."),
    ("batt_dis_kw", "float", "Battery discharging, kW."),
    ("grid_imp_kw", "float", "Grid import, kW."),
    ("grid_exp_kw", "float", "Grid export, kW."),
    ("curtail_kw", "float", "PV curtailed, kW."),
    ("soc", "float", "State of charge at the end of the interval, fraction of capacity."),
    ("reason", "string", "Why, in a sentence an operator reads."),
)

DISPATCH_EXPLANATIONS = _schema(
    ("reason_code", "string", "The decision's kind, e.g. discharge_peak, charge_pv_surplus, import_idle."),
    ("reason", "string", "The decision in a sentence, with the numbers that drove it."),
    ("binding", "json", "Constraints at their bound: " + ", ".join(BINDING_NAMES) + "."),
    ("marginal_cost_per_kwh", "float", "What one more kWh of load would cost then (MILP plans; null otherwise)."),
)

DISPATCH_KPIS = {
    "dagster/column_schema": dg.TableSchema([
        dg.TableColumn("run_id", "uuid", "The dispatch run (dispatch_runs.id)."),
        dg.TableColumn("total_cost", "float", "import_cost - export_revenue + demand charge on the peak import."),
        dg.TableColumn("import_cost", "float", "Energy bought."),
        dg.TableColumn("export_revenue", "float", "Energy sold."),
        dg.TableColumn("total_import_kwh", "float", "kWh imported."),
        dg.TableColumn("total_export_kwh", "float", "kWh exported."),
        dg.TableColumn("total_curtail_kwh", "float", "kWh of PV curtailed."),
        dg.TableColumn("peak_grid_import_kw", "float", "Highest import, kW."),
        dg.TableColumn("peak_grid_export_kw", "float", "Highest export, kW."),
        dg.TableColumn("avg_soc", "float", "Mean state of charge, fraction."),
        dg.TableColumn("min_soc", "float", "Lowest state of charge, fraction."),
        dg.TableColumn("max_soc", "float", "Highest state of charge, fraction."),
        dg.TableColumn("final_soc", "float", "State of charge at the day's end, fraction."),
        dg.TableColumn("equivalent_full_cycles", "float", "kWh discharged / capacity."),
        dg.TableColumn("self_sufficiency", "float", "1 - import / load, fraction."),
        dg.TableColumn("pv_utilization", "float", "1 - curtailed / PV, fraction."),
        dg.TableColumn("violation_kwh", "float", "kWh by which soft constraints were broken."),
        dg.TableColumn("baseline_cost", "float", "The same day without a battery."),
        dg.TableColumn("savings_vs_baseline", "float", "baseline_cost - total_cost."),
    ])
}
