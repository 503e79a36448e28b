"""Which parameters go to which update rule, with which hyperparameters.

The model names its parameters by role (`model.parameter_roles()`). AdamW learning rates of the
embedding-like roles scale as (model_dim/768)^-0.5: they were tuned at width 768.
"""

REQUIRED = ("embedding_lr", "unembedding_lr", "matrix_lr", "scalar_lr", "weight_decay", "model_dim")


def _check(hparams):
    missing = [k for k in REQUIRED if k not in hparams]
    if missing:
        raise KeyError(f"optimizer hparams lack {missing}; pass all of {list(REQUIRED)}")


def _adamw(role, params, lr, betas, weight_decay):
    return dict(kind="adamw", role=role, params=params, lr=lr, initial_lr=lr, betas=betas, eps=1e-10,
                weight_decay=weight_decay)


def _adamw_groups(roles, h):
    s = (h["model_dim"] / 768) ** -0.5
    return [
        _adamw("lm_head", roles["lm_head"], h["unembedding_lr"] * s, (0.8, 0.96), 0.01),
        _adamw("wte", roles["wte"], h["embedding_lr"] * s, (0.8, 0.995), 0.001),
        _adamw("value_embeds", roles["value_embeds"], 0.5 * h["embedding_lr"] * s, (0.8, 0.995), 0.01),
        # the residual lambdas want a ~100x smaller step than the other scalars
        _adamw("resid_lambdas", roles["resid_lambdas"], 0.01 * h["scalar_lr"], (0.8, 0.95), 0.05),
        _adamw("x0_lambdas", roles["x0_lambdas"], h["scalar_lr"], (0.96, 0.95), 0.0),
        _adamw("scalars", roles["scalars"], 0.2, (0.8, 0.95), 0.0),
    ]


def muon_param_groups(model, hparams):
    """AdamW groups per role, then one Muon group per distinct matrix shape (they stack)."""
    _check(hparams)
    roles = model.parameter_roles()
    groups = [g for g in _adamw_groups(roles, hparams) if g["params"]]
    matrices = roles["matrices"]
    for shape in sorted({tuple(p.shape) for p in matrices}):
        lr = hparams["matrix_lr"]
        groups.append(dict(kind="muon", role="matrices", params=[p for p in matrices if tuple(p.shape) == shape],
                           lr=lr, initial_lr=lr, momentum=0.95, beta2=0.9, ns_steps=5,
                           weight_decay=hparams["weight_decay"]))
    return groups


def adamw_param_groups(model, hparams):
    """The same AdamW groups, plus the matrices on AdamW.

    Matrix lr = matrix_lr / sqrt(model_dim): about the per-element step size Muon would take.
    """
    _check(hparams)
    roles = model.parameter_roles()
    groups = [g for g in _adamw_groups(roles, hparams) if g["params"]]
    lr = hparams["matrix_lr"] / hparams["model_dim"] ** 0.5
    groups.append(_adamw("matrices", roles["matrices"], lr, (0.9, 0.95), hparams["weight_decay"]))
    return groups
