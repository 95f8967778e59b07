"""Forms (Django validates them; every text a user types is escaped when shown)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password

from brainmatch.web.models import DeployedModel, Role, Study

NAME_MAX = 120


class LoginForm(forms.Form):
    username = forms.CharField(max_length=150)
    password = forms.CharField(widget=forms.PasswordInput, max_length=256)


class PatientUploadForm(forms.Form):
    features = forms.FileField(
        label="Patient features",
        help_text="One row: participant_id (a pseudonymised code such as sub-001) and the "
        "model's features, as CSV, TSV or Parquet; or a zipped fMRIPrep subject folder "
        "(sub-<label>/, optionally with its FreeSurfer stats/).",
    )
    clinical = forms.FileField(
        label="Clinical values (optional)",
        required=False,
        help_text="One row with participant_id and the baseline score, age, sex and site the "
        "model needs, when they are not in the features file (required with a zip).",
    )
    model = forms.ModelChoiceField(queryset=DeployedModel.objects.none(), label="Model")
    normative = forms.ModelChoiceField(
        queryset=DeployedModel.objects.none(),
        required=False,
        empty_label="(none)",
        label="Normative reference (optional)",
        help_text="Also build the patient's profile: circuits against this norm, with "
        "hypotheses kept apart from the model's validated prediction.",
    )
    study = forms.ModelChoiceField(
        queryset=Study.objects.none(),
        required=False,
        empty_label="(not shared)",
        label="Share within study (optional)",
    )

    def __init__(self, user: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["model"].queryset = DeployedModel.objects.filter(
            deployed=True, kind="selection"
        )
        self.fields["normative"].queryset = DeployedModel.objects.filter(
            deployed=True, kind="normative"
        )
        self.fields["study"].queryset = Study.objects.filter(members=user)


class DatasetUploadForm(forms.Form):
    name = forms.CharField(max_length=NAME_MAX, label="Trial name")
    features = forms.FileField(
        label="Feature table",
        help_text="participant_id + numeric features (CSV, TSV or Parquet), e.g. "
        "brainmatch extract's features.tsv.",
    )
    outcomes = forms.FileField(
        label="Outcome table",
        help_text="participant_id, arm, outcome and optional baseline, site, covariates.",
    )


class TrainForm(forms.Form):
    treatment_column = forms.ChoiceField(label="Treatment (arm) column")
    outcome_column = forms.ChoiceField(label="Outcome column")
    baseline_column = forms.ChoiceField(label="Baseline severity column", required=False)
    site_column = forms.ChoiceField(label="Site column (ComBat harmonisation)", required=False)
    covariates = forms.MultipleChoiceField(
        label="Covariates", required=False, widget=forms.CheckboxSelectMultiple
    )
    model = forms.ChoiceField(
        choices=[("interaction", "interaction (PAI)"), ("per-arm", "one model per arm")],
        initial="interaction",
    )
    n_repeats = forms.IntegerField(min_value=1, max_value=50, initial=10, label="CV repeats")
    n_permutations = forms.IntegerField(
        min_value=0, max_value=10000, initial=1000, label="Permutations"
    )
    seed = forms.IntegerField(min_value=0, max_value=2**31 - 1, initial=0)
    learning_curve = forms.BooleanField(
        required=False, initial=True, label="Learning curve (a few extra CV runs)"
    )

    def __init__(self, columns: list[str], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = [(c, c) for c in columns if c != "participant_id"]
        optional = [("", "(none)"), *choices]
        self.fields["treatment_column"].choices = choices
        self.fields["outcome_column"].choices = choices
        self.fields["baseline_column"].choices = optional
        self.fields["site_column"].choices = optional
        self.fields["covariates"].choices = choices
        for name, guess in (
            ("treatment_column", "arm"),
            ("outcome_column", None),
            ("baseline_column", None),
            ("site_column", "site"),
        ):
            cols = [c for c, _ in choices]
            if guess in cols:
                self.fields[name].initial = guess
            elif name == "outcome_column":
                self.fields[name].initial = next(
                    (c for c in cols if "week" in c or "outcome" in c), None
                )
            elif name == "baseline_column":
                self.fields[name].initial = next((c for c in cols if "baseline" in c), "")


class UserCreateForm(forms.Form):
    username = forms.RegexField(
        regex=r"^[A-Za-z0-9_.@+-]{3,150}$",
        max_length=150,
        help_text="3-150 letters, digits and @ . + - _",
    )
    role = forms.ChoiceField(choices=Role.choices)
    password1 = forms.CharField(widget=forms.PasswordInput, label="Password", max_length=256)
    password2 = forms.CharField(widget=forms.PasswordInput, label="Repeat", max_length=256)

    def clean_username(self) -> str:
        name = self.cleaned_data["username"]
        if get_user_model().objects.filter(username__iexact=name).exists():
            raise forms.ValidationError("a user with this name exists")
        return str(name)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        p1, p2 = data.get("password1"), data.get("password2")
        if p1 and p1 != p2:
            raise forms.ValidationError("the two passwords differ")
        if p1:
            user = get_user_model()(username=data.get("username", ""))
            validate_password(p1, user)
        return data


class UserRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)
    active = forms.BooleanField(required=False)


class ModelUploadForm(forms.Form):
    name = forms.CharField(max_length=NAME_MAX)
    file = forms.FileField(
        label="Model file",
        help_text="model.npz from brainmatch train (treatment selection) or "
        "normative_model.npz from brainmatch normative fit (normative reference).",
    )


class DeployTrainingForm(forms.Form):
    name = forms.CharField(max_length=NAME_MAX)


class StudyForm(forms.Form):
    name = forms.CharField(max_length=NAME_MAX)
    members = forms.ModelMultipleChoiceField(
        queryset=get_user_model().objects.none(),
        widget=forms.CheckboxSelectMultiple,
        required=False,
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["members"].queryset = get_user_model().objects.filter(
            bm_profile__role=Role.CLINICIAN, is_active=True
        )

    def clean_name(self) -> str:
        name = str(self.cleaned_data["name"])
        if Study.objects.filter(name=name).exists():
            raise forms.ValidationError("a study with this name exists")
        return name
