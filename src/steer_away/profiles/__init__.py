"""Per-user profiles: preferred toxicity, dislike, sensitivity and Bradley–Terry ideal points."""

from steer_away.profiles.build import (
                                       SENSITIVITIES,
                                       SensitivityRule,
                                       UserProfile,
                                       build_profiles,
                                       load_profiles,
                                       pick_users,
                                       profiles_scorer,
                                       save_profiles,
)

__all__ = ["SENSITIVITIES", "SensitivityRule", "UserProfile", "build_profiles", "load_profiles", "pick_users",
           "profiles_scorer", "save_profiles"]
