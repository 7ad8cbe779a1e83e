# Remote state lives in a GCS bucket made once by hand (docs/deploy.md, "State bucket"):
#   terraform init -backend-config="bucket=<project>-tfstate" -backend-config="prefix=ekklesia"
terraform {
  required_version = ">= 1.9"

  required_providers {
    google = {
      source = "hashicorp/google"
      # 7.x: google_sql_user.database_roles (IAM users mapped to the migrations' roles).
      version = "~> 7.0"
    }
    time = {
      source  = "hashicorp/time"
      version = "~> 0.12"
    }
  }

  backend "gcs" {}
}

provider "google" {
  project = var.project_id
  region  = var.region
  # Budgets are billed to the project (Billing Budgets API needs a quota project).
  user_project_override = true
  billing_project       = var.project_id
}

data "google_project" "this" {
  project_id = var.project_id
}
