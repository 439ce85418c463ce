"""The example record travels through the API and back."""

from conftest import without_subject


def test_example_record_is_accepted_and_read_back(client, site_a, example_record):
    subject_id, body = without_subject(example_record)
    created = client.put(f"/api/v1/records/{subject_id}", json=body, headers=site_a)
    assert created.status_code == 201, created.json
    assert created.headers["ETag"] == '"1"'
    read = client.get(f"/api/v1/records/{subject_id}", headers=site_a)
    assert read.status_code == 200
    assert read.json["metastatic_sites"] == ["bone", "liver"]
    assert read.json["derived"]["remission_days"] == 3100
    assert read.json["version"] == 1
